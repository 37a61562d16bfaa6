-- A run's ticket (the message driving it) is cleared when the run ends (shared/store/runs.py,
-- the terminal step), so that executions_ticket holds only runs that started and did not end.
-- Runs that ended before this release still carry theirs: cleared here once.
UPDATE executions SET ticket = NULL WHERE ticket IS NOT NULL AND status NOT IN ('queued', 'running');
