-- The run statements (the claim, each step's write) run on generic plans, made once per
-- connection with the table sizes of that moment. executions_running_workspace, partial on
-- status = 'running', matched every statement that names a running run, and a plan made while
-- no run was running could pick it: the ticket lookup and a step's write by id then scanned every
-- running run's entry (seen: 999 rows filtered for one). Running counts per workspace (the
-- fair-share claim, the cap, /metrics) are answered by executions_workspace_status_id
-- (workspace_id, status, id DESC) as well; it goes, and each status change has one index fewer
-- to maintain.
DROP INDEX executions_running_workspace;

-- The ticket lookup ("the run this message was driving") on an index that no condition on
-- status selects (the lookup states its status through a subquery), so that one plan serves it
-- at any size. It holds every execution that has started (a run keeps its ticket).
CREATE INDEX executions_ticket ON executions (ticket) WHERE ticket IS NOT NULL;
DROP INDEX executions_running_ticket;
