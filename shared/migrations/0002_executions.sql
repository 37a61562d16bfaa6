-- Governed agent executions: documents, certificates, violations, the email outbox, webhook
-- deliveries with their attempts, and the certificate signing keys.

-- Workspace documents the agent's tools read and write. A name is unique per workspace, so
-- write_document(name) overwrites in place (an update keeps the id).
CREATE TABLE documents (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    name         text NOT NULL,
    content      text NOT NULL,
    labels       jsonb NOT NULL DEFAULT '[]',
    created_by   text,                 -- execution id when an agent wrote it, else NULL (API upload)
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, name)
);
CREATE INDEX documents_workspace_id ON documents (workspace_id, id DESC);

-- One row per allowed tool call. (execution_id, seq) is unique so a resumed run can never
-- issue a second certificate for the same position in the chain; call_key ties the row to the
-- tool call it certifies (execution step and index), so a retry finds the one already issued.
CREATE TABLE certificates (
    id           text PRIMARY KEY,
    execution_id text NOT NULL REFERENCES executions (id),
    seq          integer NOT NULL,
    call_key     text NOT NULL,
    certificate  jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (execution_id, seq),
    UNIQUE (execution_id, call_key)
);

-- Refused tool calls with the guard's violations (one row per refused call).
CREATE TABLE violations (
    id           bigserial PRIMARY KEY,
    execution_id text NOT NULL REFERENCES executions (id),
    call_key     text NOT NULL,
    tool         text NOT NULL,
    arguments_sha256 text NOT NULL,
    violations   jsonb NOT NULL,
    halted       boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (execution_id, call_key)
);

-- send_email never talks to a mail server: messages land here.
CREATE TABLE email_outbox (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    execution_id text REFERENCES executions (id),
    call_key     text,
    recipient    text NOT NULL,
    subject      text NOT NULL,
    body         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (execution_id, call_key)
);

-- A webhook delivery: one logical message (webhook_id stable across retries) per event.
CREATE TABLE webhook_deliveries (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces (id),
    execution_id  text REFERENCES executions (id),
    url           text NOT NULL,
    event_type    text NOT NULL,
    webhook_id    text NOT NULL UNIQUE,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One delivery per execution and event type: a terminal transition enqueues at most one.
CREATE UNIQUE INDEX webhook_deliveries_execution ON webhook_deliveries (execution_id, event_type)
    WHERE execution_id IS NOT NULL;

CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  text NOT NULL REFERENCES webhook_deliveries (id),
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, attempt)
);

-- Certificate signing keys. The private seed is stored only encrypted (Fernet, key derived from
-- WARDEN_SECRET_KEY) and only for generated keys; a configured WARDEN_SIGNING_KEY is recorded
-- with its public half only, so /compliance/keys lists it.
CREATE TABLE signing_keys (
    key_id         text PRIMARY KEY,
    public_x       text NOT NULL,
    encrypted_seed text,
    source         text NOT NULL CHECK (source IN ('generated', 'configured')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz
);
-- At most one active generated key: two processes generating at once race on this index and
-- the loser reads the winner's key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true))
    WHERE retired_at IS NULL AND source = 'generated';
