-- Foundation: workspaces, API keys, agent executions with their events, the outbox,
-- idempotency records.

CREATE TABLE workspaces (
    id             text PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    webhook_secret text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The plain key is never stored: only a lookup prefix and the SHA-256 of the whole key.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    prefix       text NOT NULL UNIQUE,
    key_hash     text NOT NULL,
    name         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE executions (
    id                    text PRIMARY KEY,
    workspace_id          text NOT NULL REFERENCES workspaces (id),
    task                  text NOT NULL,
    status                text NOT NULL CHECK (status IN
                              ('queued', 'running', 'succeeded', 'blocked', 'error', 'cancelled')),
    compliance_policy     text NOT NULL,
    policy_version        text NOT NULL,
    provider              text,
    model                 text,
    budget_cents          integer NOT NULL,
    spent_cents           numeric(16, 6) NOT NULL DEFAULT 0,
    requested_permissions jsonb,
    effective_permissions jsonb NOT NULL,
    denied_permissions    jsonb NOT NULL DEFAULT '[]',
    webhook_url           text,
    result                jsonb,
    error                 jsonb,
    usage                 jsonb NOT NULL DEFAULT '{}',
    counts                jsonb NOT NULL DEFAULT '{}',
    state                 jsonb NOT NULL DEFAULT '{}',
    event_count           integer NOT NULL DEFAULT 0,
    cancel_requested      boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
-- Keyset pages, newest first, per workspace (with and without a status filter).
CREATE INDEX executions_workspace_id ON executions (workspace_id, id DESC);
CREATE INDEX executions_workspace_status_id ON executions (workspace_id, status, id DESC);

-- seq is gapless per execution: it is taken from executions.event_count under the row lock.
CREATE TABLE execution_events (
    execution_id text NOT NULL REFERENCES executions (id),
    seq          integer NOT NULL,
    type         text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    data         jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (execution_id, seq)
);

-- Transactional outbox: written with the record it announces, published to the broker after
-- commit by the relay, re-published by the sweeper if the relay missed it.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    task_name     text NOT NULL,
    args          jsonb NOT NULL,
    queue         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX outbox_pending ON outbox (id) WHERE dispatched_at IS NULL;

CREATE TABLE idempotency_keys (
    workspace_id  text NOT NULL REFERENCES workspaces (id),
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status_code   integer NOT NULL,
    response      jsonb NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, key)
);
