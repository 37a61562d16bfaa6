"""Agent execution tasks (queue ``executions``)."""

from __future__ import annotations

import logging
from typing import Any

from shared.db import OUTAGE_ERRORS, first_line
from shared.logs import execution_id_var
from workers import runtime
from workers.base import task
from workers.executor import Abandoned, execute

log = logging.getLogger(__name__)


@task("workers.executions.run", soft_time_limit=600, time_limit=660, idempotent=True, bind=True, max_retries=None)
def run(self: Any, execution_id: str, abandoned: dict[str, Any] | None = None) -> str:
    """A run message: each queued execution has one, and each message drives one run to a
    terminal state, the one the fair-share scheduler gives it (normally its own, see
    shared/store/runs.begin). Safe to deliver twice: the run is owned through a lease with a
    fencing token and persisted step by step, so a redelivered message resumes the run it was
    driving once its dead worker's lease has expired, and a duplicate changes nothing.

    A message that finds its run still under a live lease, or runs waiting only behind their
    workspace's cap, comes back later (holding no slot meanwhile). Time limits come from
    WARDEN_EXECUTIONS_TIME_LIMIT_S, enforced by the executor per run, with Celery's as backstop.

    ``abandoned`` is set by this task only: the run its previous delivery gave up when the
    database failed under it (workers.executor.Abandoned), which this one takes back at once."""
    execution_id_var.set(execution_id)
    try:
        outcome = execute(execution_id, runtime.db(), runtime.settings(), Abandoned.from_message(abandoned))
    except Abandoned as gave_up:
        said = gave_up.message()  # None once given up too often in a row: left to its lease then
        raise self.retry(countdown=_outage_delay(self, execution_id, gave_up.__cause__ or gave_up),
                         kwargs={"abandoned": said} if said else {}) from gave_up
    except OUTAGE_ERRORS as exc:
        # The database is unreachable: nothing was recorded, and acknowledging the message would
        # leave its run to the stale-run sweep (minutes). The message comes back instead (with
        # its ``abandoned``, if any).
        raise self.retry(countdown=_outage_delay(self, execution_id, exc)) from exc
    log.info("run message %s: %s", execution_id, outcome.status)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


def _outage_delay(task: Any, execution_id: str, exc: BaseException) -> float:
    """How soon a message that met a database failure comes back: 0.5 s doubling to 10 s."""
    delay = min(10.0, 0.5 * 2 ** min(task.request.retries, 5))
    log.warning("run message %s: database unavailable (%s); again in %.1f s", execution_id,
                first_line(exc), delay)
    return delay
