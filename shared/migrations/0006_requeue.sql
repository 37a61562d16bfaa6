-- Unfinished executions, for the beat job that re-enqueues executions whose broker message was lost
-- (queued too long, or running with no step for longer than any run may take). Keyed on status,
-- which changes only at transitions, so the executor's per-step updates stay HOT (updated_at is
-- deliberately not indexed); the job filters the few unfinished rows by updated_at.
CREATE INDEX executions_unfinished ON executions (status) WHERE status IN ('queued', 'running');
