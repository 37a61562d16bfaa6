-- Workflows: named stages with depends_on edges (a DAG), each run as an ordinary execution.

CREATE TABLE workflows (
    id               text PRIMARY KEY,
    workspace_id     text NOT NULL REFERENCES workspaces (id),
    name             text,
    status           text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    budget_cents     integer,              -- caps the sum of the stages' budgets when set
    error            jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    event_count      integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflows_workspace_id ON workflows (workspace_id, id DESC);
CREATE INDEX workflows_workspace_status_id ON workflows (workspace_id, status, id DESC);

-- state: pending (waiting for dependencies), started (execution_id set; its status is the
-- stage's), skipped (never started: a dependency failed, or the workflow was cancelled).
-- pending → started happens once, under the workflow row lock, guarded by state = 'pending'.
CREATE TABLE workflow_stages (
    workflow_id  text NOT NULL REFERENCES workflows (id),
    name         text NOT NULL,
    position     integer NOT NULL,
    depends_on   jsonb NOT NULL DEFAULT '[]',
    spec         jsonb NOT NULL,        -- task template, policy, permissions, budget, provider, model
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'started', 'skipped')),
    execution_id text UNIQUE REFERENCES executions (id),
    skip_reason  jsonb,
    started_at   timestamptz,
    PRIMARY KEY (workflow_id, name)
);

ALTER TABLE executions ADD COLUMN workflow_id text REFERENCES workflows (id);
ALTER TABLE executions ADD COLUMN workflow_stage text;
-- The database's own guarantee that a stage never gets a second execution.
CREATE UNIQUE INDEX executions_workflow_stage ON executions (workflow_id, workflow_stage)
    WHERE workflow_id IS NOT NULL;

CREATE TABLE workflow_events (
    workflow_id text NOT NULL REFERENCES workflows (id),
    seq         integer NOT NULL,
    type        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    data        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (workflow_id, seq)
);
