-- Unfinished executions by last activity: the beat job that re-enqueues executions whose broker
-- message was lost (queued too long, or running with no step for longer than any run may take).
CREATE INDEX executions_unfinished_updated ON executions (updated_at) WHERE status IN ('queued', 'running');
