"""Periodic housekeeping driven by celery beat."""

from __future__ import annotations

from celery import current_app

from shared import outbox
from workers import runtime
from workers.base import task


@task("workers.maintenance.sweep_outbox", soft_time_limit=50, time_limit=60, idempotent=True)
def sweep_outbox() -> int:
    """Publish outbox rows the relay has not published within a few seconds (relay down)."""
    return outbox.drain(runtime.db(), current_app, min_age_s=2.0)


@task("workers.maintenance.purge", soft_time_limit=50, time_limit=60, idempotent=True)
def purge() -> int:
    s = runtime.settings()
    n = outbox.purge_dispatched(runtime.db())
    with runtime.db().transaction() as cur:
        from shared.store import idempotency

        n += idempotency.purge_expired(cur, s.idempotency_ttl_s)
    return n
