"""Periodic housekeeping driven by celery beat."""

from __future__ import annotations

import logging

from celery import current_app

from shared import outbox
from shared.store import executions
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)


@task("workers.maintenance.sweep_outbox", soft_time_limit=50, time_limit=60, idempotent=True)
def sweep_outbox() -> int:
    """Publish outbox rows the relay has not published within a few seconds (relay down)."""
    return outbox.drain(runtime.db(), current_app, min_age_s=2.0)


@task("workers.maintenance.requeue_stale", soft_time_limit=50, time_limit=60, idempotent=True)
def requeue_stale() -> int:
    """Re-enqueue executions whose broker message was lost (queued for longer than
    WARDEN_REQUEUE_QUEUED_S) or whose worker is gone (running under an expired lease): the new
    message takes the run over without waiting for the broker's visibility timeout."""
    s = runtime.settings()
    ids = executions.requeue_stale(runtime.db(), queued_s=s.requeue_queued_s,
                                   running_s=s.executions_time_limit_s + 60, lease_s=s.lease_s)
    if ids:
        log.warning("re-enqueued %d stale execution(s): %s", len(ids), ", ".join(ids[:20]))
        outbox.wake(runtime.redis().client)
    return len(ids)


@task("workers.maintenance.purge", soft_time_limit=50, time_limit=60, idempotent=True)
def purge() -> int:
    s = runtime.settings()
    n = outbox.purge_dispatched(runtime.db())
    with runtime.db().transaction() as cur:
        from shared.store import idempotency

        n += idempotency.purge_expired(cur, s.idempotency_ttl_s)
    return n
