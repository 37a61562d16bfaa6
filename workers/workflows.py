"""Workflow advancement (queue ``executions``): ``workers.workflows.advance(workflow_id)``.

Enqueued through the outbox by every stage execution's terminal transition (and safe to deliver
any number of times: shared/store/workflows.advance locks the workflow row and starts a stage
only from ``pending``). Starting a stage writes its execution and outbox row in this same
transaction; the relay is woken after commit.
"""

from __future__ import annotations

import logging

from shared import outbox
from shared.store import workflows
from shared.workflow_events import publish
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)


@task(workflows.ADVANCE_TASK, soft_time_limit=60, time_limit=90, idempotent=True)
def advance(workflow_id: str) -> str:
    with runtime.db().transaction() as cur:
        result = workflows.advance(cur, workflow_id)
    client = runtime.redis().client
    if result.started:
        outbox.wake(client)
    publish(client, result.events)
    outcome = result.status or (f"started {len(result.started)}" if result.started else "no change")
    log.info("workflow %s: %s", workflow_id, outcome)
    return outcome
