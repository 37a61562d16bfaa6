-- Run ownership by lease (replaces the session-level advisory lock held on a connection for a
-- whole run). A worker that claims a run bumps `lease_token` (the fencing token) and sets
-- `lease_expires_at`; every step it writes is guarded by that token, and its heartbeat pushes the
-- expiry forward while the run waits on its model. A worker that dies stops renewing: once the
-- lease has expired, any worker may take the run over (a new token fences the old owner's late
-- writes out). No connection is held between steps, so a dead host's sockets decide nothing.
--
-- `ticket`: the run message (named by its execution id) whose delivery is driving the run, so a
-- redelivered message finds the run it was driving even when the fair-share scheduler gave it
-- another workspace's run. `deliveries`: how many times a worker has taken the run (a run whose
-- worker dies at the same step every time ends `worker_lost` instead of looping). `worker`: the
-- host and process of the last owner. None of these is indexed but `ticket` (written only when
-- the status changes), so the per-step updates stay heap-only.
ALTER TABLE executions
    ADD COLUMN lease_token      bigint NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN ticket           text,
    ADD COLUMN deliveries       integer NOT NULL DEFAULT 0,
    ADD COLUMN worker           jsonb;

CREATE INDEX executions_running_ticket ON executions (ticket) WHERE status = 'running';

-- Fair share: the workspaces with queued runs (a loose index scan over workspace_id), the oldest
-- queued run of each, and the running count of each.
CREATE INDEX executions_queued_fair ON executions (workspace_id, id) WHERE status = 'queued';
CREATE INDEX executions_running_workspace ON executions (workspace_id) WHERE status = 'running';

-- An optional cap on a workspace's running executions, even when slots are free (NULL: none).
ALTER TABLE workspaces ADD COLUMN max_running_executions integer
    CHECK (max_running_executions IS NULL OR max_running_executions > 0);
