"""Agent execution tasks (queue ``executions``)."""

from __future__ import annotations

import logging
from typing import Any

from shared.logs import execution_id_var
from workers import runtime
from workers.base import task
from workers.executor import execute

log = logging.getLogger(__name__)


@task("workers.executions.run", soft_time_limit=600, time_limit=660, idempotent=True, bind=True, max_retries=None)
def run(self: Any, execution_id: str) -> str:
    """A run message: each queued execution has one, and each message drives one run to a
    terminal state, the one the fair-share scheduler gives it (normally its own, see
    shared/store/runs.begin). Safe to deliver twice: the run is owned through a lease with a
    fencing token and persisted step by step, so a redelivered message resumes the run it was
    driving once its dead worker's lease has expired, and a duplicate changes nothing.

    A message that finds its run still under a live lease, or runs waiting only behind their
    workspace's cap, comes back later (holding no slot meanwhile). Time limits come from
    WARDEN_EXECUTIONS_TIME_LIMIT_S, enforced by the executor per run, with Celery's as backstop."""
    execution_id_var.set(execution_id)
    outcome = execute(execution_id, runtime.db(), runtime.settings())
    log.info("run message %s: %s", execution_id, outcome.status)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
