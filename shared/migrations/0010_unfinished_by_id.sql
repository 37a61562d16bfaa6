-- The executor finds its row by id under a status guard (`WHERE id = $1 AND status = 'running'`,
-- begin's `status = 'queued'`). With the unfinished-executions index keyed on status alone, the
-- planner could pick it for those statements and then filter every queued or running row (and
-- every dead entry not yet vacuumed) for the one id: a begin cost grew with the backlog. Keyed on
-- (status, id), the same index finds that row directly; the requeue job still reads it by status.
-- Still only status and id: the executor's per-step updates stay heap-only.
CREATE INDEX executions_unfinished_status_id ON executions (status, id) WHERE status IN ('queued', 'running');
DROP INDEX executions_unfinished;
