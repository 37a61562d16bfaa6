"""Agent execution tasks (queue ``executions``)."""

from __future__ import annotations

import logging

from shared.logs import execution_id_var
from workers import runtime
from workers.base import task
from workers.executor import execute

log = logging.getLogger(__name__)


@task("workers.executions.run", soft_time_limit=600, time_limit=660, idempotent=True)
def run(execution_id: str) -> str:
    """Run (or resume) an execution to a terminal state. Safe to deliver twice: the executor
    holds a per-execution advisory lock and persists every step, so a redelivered message
    resumes where the last committed step left off, and a message for a finished run does
    nothing."""
    execution_id_var.set(execution_id)
    outcome = execute(execution_id, runtime.db(), runtime.settings())
    log.info("execution %s: %s", execution_id, outcome)
    return outcome
