-- Monitoring tasks (seed 002): per-workspace guardrails versions, the immutable concept,
-- condition and action versions a Task pins, and the Tasks themselves.

-- Each PUT /guardrails appends a revision; nothing is ever updated. No row = the shipped default.
CREATE TABLE guardrails_versions (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    revision     integer NOT NULL CHECK (revision > 0),
    version      text NOT NULL,
    document     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, revision)
);

-- Versions are strings "1.0", "1.1", …; ``minor`` orders them (text order would put 1.10 before 1.2).
CREATE TABLE concepts (
    id           text NOT NULL,
    version      text NOT NULL,
    minor        integer NOT NULL,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    body         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version),
    UNIQUE (id, minor)
);

CREATE TABLE conditions (
    id                  text NOT NULL,
    version             text NOT NULL,
    minor               integer NOT NULL,
    workspace_id        text NOT NULL REFERENCES workspaces (id),
    concept_id          text NOT NULL,
    concept_version     text NOT NULL,
    strategy            text NOT NULL,
    params              jsonb NOT NULL,
    metric              text NOT NULL,
    severity            text,
    plan                jsonb NOT NULL,
    body                jsonb NOT NULL,   -- description, provenance, trace
    guardrails_version  text NOT NULL,
    guardrails_revision integer NOT NULL DEFAULT 0,  -- 0 = the shipped default document
    created_from        jsonb NOT NULL,   -- {"kind": "intent" | "calibration", …}
    immutable           boolean NOT NULL DEFAULT true CHECK (immutable),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version),
    UNIQUE (id, minor),
    FOREIGN KEY (concept_id, concept_version) REFERENCES concepts (id, version)
);

CREATE TABLE actions (
    id           text NOT NULL,
    version      text NOT NULL,
    minor        integer NOT NULL,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    binding      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version),
    UNIQUE (id, minor)
);

-- Pinned versions never change in place: a change is a new row. The database refuses edits.
CREATE FUNCTION warden_refuse_version_edit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable versions; create a new version instead', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER concepts_immutable BEFORE UPDATE OR DELETE ON concepts
    FOR EACH ROW EXECUTE FUNCTION warden_refuse_version_edit();
CREATE TRIGGER conditions_immutable BEFORE UPDATE OR DELETE ON conditions
    FOR EACH ROW EXECUTE FUNCTION warden_refuse_version_edit();
CREATE TRIGGER actions_immutable BEFORE UPDATE OR DELETE ON actions
    FOR EACH ROW EXECUTE FUNCTION warden_refuse_version_edit();
CREATE TRIGGER guardrails_versions_immutable BEFORE UPDATE OR DELETE ON guardrails_versions
    FOR EACH ROW EXECUTE FUNCTION warden_refuse_version_edit();

CREATE TABLE tasks (
    id                  text PRIMARY KEY,
    workspace_id        text NOT NULL REFERENCES workspaces (id),
    intent              text NOT NULL,
    constraints         jsonb,
    concept_id          text NOT NULL,
    concept_version     text NOT NULL,
    condition_id        text NOT NULL,
    condition_version   text NOT NULL,
    action_id           text NOT NULL,
    action_version      text NOT NULL,
    entity_scope        text NOT NULL,
    metric              text NOT NULL,
    status              text NOT NULL CHECK (status IN ('active', 'paused', 'deleted')),
    guardrails_version  text NOT NULL,
    guardrails_revision integer NOT NULL DEFAULT 0,
    trigger_count       integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    last_triggered_at   timestamptz,
    FOREIGN KEY (concept_id, concept_version) REFERENCES concepts (id, version),
    FOREIGN KEY (condition_id, condition_version) REFERENCES conditions (id, version),
    FOREIGN KEY (action_id, action_version) REFERENCES actions (id, version)
);
-- Keyset pages, newest first, per workspace (with and without a status filter).
CREATE INDEX tasks_workspace_id ON tasks (workspace_id, id DESC);
CREATE INDEX tasks_workspace_status_id ON tasks (workspace_id, status, id DESC);
-- Evaluation: the active tasks watching one (workspace, entity, metric).
CREATE INDEX tasks_active_entity_metric ON tasks (workspace_id, entity_scope, metric) WHERE status = 'active';
