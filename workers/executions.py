"""Agent execution tasks (queue ``executions``)."""

from __future__ import annotations

import logging

from shared import events
from shared.logs import execution_id_var
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)


@task("workers.executions.run", soft_time_limit=600, time_limit=660, idempotent=True)
def run(execution_id: str) -> None:
    """Start an execution. Guarded transition queued → running: a redelivered or duplicated
    message finds the row no longer queued and does nothing.

    The agent executor is not wired in yet: the run is marked running and recorded so, and
    nothing pretends an agent ran.
    """
    execution_id_var.set(execution_id)
    db = runtime.db()
    with db.transaction() as cur:
        cur.execute("UPDATE executions SET status = 'running', started_at = now(), updated_at = now()"
                    " WHERE id = %s AND status = 'queued' AND NOT cancel_requested RETURNING id", (execution_id,))
        if cur.fetchone() is None:
            log.info("execution %s is not queued; nothing to start", execution_id)
            return
        started = events.append_event(cur, execution_id, "execution.started", {})
    events.publish(runtime.redis().client, [started])
