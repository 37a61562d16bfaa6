-- Intake rows are published by the API process that wrote them, right after commit
-- (api/dispatch.py); `publish_after` keeps the relay off them meanwhile. If that process dies or
-- the broker refuses, the relay publishes them once it passes (the API clears it on a refusal).
ALTER TABLE outbox ADD COLUMN publish_after timestamptz;

-- Executor steps rewrite their execution's row several times; room on the page lets those
-- updates stay heap-only (no new index entries for the unchanged indexed columns).
ALTER TABLE executions SET (fillfactor = 80);
