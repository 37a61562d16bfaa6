"""Agent execution tasks (queue ``executions``)."""

from __future__ import annotations

import logging
from typing import Any

from shared.logs import execution_id_var
from workers import runtime
from workers.base import task
from workers.executor import execute

log = logging.getLogger(__name__)


# How often a duplicate message re-checks a run another worker holds (it stops once that run ends).
LOCKED_RETRY_S = 30


@task("workers.executions.run", soft_time_limit=600, time_limit=660, idempotent=True, bind=True, max_retries=100)
def run(self: Any, execution_id: str) -> str:
    """Run (or resume) an execution to a terminal state. Safe to deliver twice: the executor
    holds a per-execution advisory lock and persists every step, so a redelivered message
    resumes where the last committed step left off, and a message for a finished run does
    nothing.

    A duplicate message that finds another worker driving the run comes back later: if that
    worker dies after this message was acknowledged, the run is still picked up. (Time limits
    come from WARDEN_EXECUTIONS_TIME_LIMIT_S via the app's task annotations.)"""
    execution_id_var.set(execution_id)
    outcome = execute(execution_id, runtime.db(), runtime.settings())
    log.info("execution %s: %s", execution_id, outcome)
    if outcome == "locked_elsewhere":
        raise self.retry(countdown=LOCKED_RETRY_S)
    return outcome
