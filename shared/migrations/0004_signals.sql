-- Signals in, alerts out (seed 002, DESIGN §5): stored signals, per-series evaluation heads,
-- per-(task, condition version) transition state, alerts, their deliveries and attempts,
-- in-app notifications, and bindings disabled by a 410.

-- One row per (workspace, entity, metric, ts): a duplicate is ignored (first value wins), so a
-- retried batch is idempotent. The primary key is also the window-read index.
CREATE TABLE signals (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    entity       text NOT NULL,
    metric       text NOT NULL,
    ts           timestamptz NOT NULL,
    value        double precision NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, entity, metric, ts)
);

-- The evaluation head of one series: every stored signal with ts <= evaluated_ts has been an
-- evaluation time. Evaluation locks this row, so one series is evaluated by one worker at a
-- time and in ts order, whatever order batches arrive or are redelivered in.
CREATE TABLE signal_series (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    entity       text NOT NULL,
    metric       text NOT NULL,
    evaluated_ts timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, entity, metric)
);

-- Transition state per (task, condition version). A missing row means inactive (armed); the
-- row is written only on a transition, so the hot path reads the few active ones.
CREATE TABLE evaluation_state (
    task_id           text NOT NULL REFERENCES tasks (id),
    condition_version text NOT NULL,
    active            boolean NOT NULL,
    last_ts           timestamptz NOT NULL,   -- evaluation time of the last transition
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, condition_version)
);

CREATE TABLE alerts (
    id                text PRIMARY KEY,
    workspace_id      text NOT NULL REFERENCES workspaces (id),
    task_id           text NOT NULL REFERENCES tasks (id),
    condition_id      text NOT NULL,
    condition_version text NOT NULL,
    action_id         text NOT NULL,
    action_version    text NOT NULL,
    entity            text NOT NULL,
    metric            text NOT NULL,
    evaluated_at      timestamptz NOT NULL,   -- the evaluation time (signal ts, or beat time for absence)
    evidence          jsonb NOT NULL,
    delivery_type     text NOT NULL,
    delivery_status   text NOT NULL DEFAULT 'pending'
                      CHECK (delivery_status IN ('pending', 'delivered', 'failed', 'disabled')),
    delivery_detail   jsonb NOT NULL DEFAULT '{}',
    fired_at          timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- A redelivered evaluation cannot fire the same transition twice.
    UNIQUE (task_id, condition_version, evaluated_at),
    FOREIGN KEY (condition_id, condition_version) REFERENCES conditions (id, version),
    FOREIGN KEY (action_id, action_version) REFERENCES actions (id, version)
);
CREATE INDEX alerts_task_id ON alerts (task_id, id DESC);

-- Webhook delivery of one alert: webhook_id is stable across its retries.
CREATE TABLE alert_deliveries (
    id              text PRIMARY KEY,
    alert_id        text NOT NULL UNIQUE REFERENCES alerts (id),
    workspace_id    text NOT NULL REFERENCES workspaces (id),
    url             text NOT NULL,
    webhook_id      text NOT NULL UNIQUE,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed', 'disabled')),
    attempt_count   integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    give_up_at      timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE alert_delivery_attempts (
    delivery_id text NOT NULL REFERENCES alert_deliveries (id),
    attempt     integer NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);

-- A binding whose endpoint answered 410 Gone: its alerts are recorded but not delivered until
-- the task is rebound to another action version (PATCH /tasks/{id} with a new delivery).
CREATE TABLE disabled_bindings (
    action_id      text NOT NULL,
    action_version text NOT NULL,
    workspace_id   text NOT NULL REFERENCES workspaces (id),
    reason         text NOT NULL,
    disabled_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (action_id, action_version)
);

CREATE TABLE notifications (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    alert_id     text UNIQUE REFERENCES alerts (id),
    task_id      text,
    title        text NOT NULL,
    body         jsonb NOT NULL,
    read_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_workspace_id ON notifications (workspace_id, id DESC);
CREATE INDEX notifications_workspace_unread ON notifications (workspace_id, id DESC) WHERE read_at IS NULL;
