"""Periodic housekeeping driven by celery beat, on its own queue and pool (``maintenance``), so a
backlog of runs or deliveries never delays the outbox sweep or the requeue of stale runs."""

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
    held = _broker_run_messages(s.broker_url)
    if held is not None:
        queued, delivered = held
        young = [name for name, age in delivered if age < max(UNMESSAGED_AFTER_S, s.lease_s + 5)]
        lost = executions.requeue_unmessaged(runtime.db(), queued, young, min_age_s=UNMESSAGED_AFTER_S)
        if lost:
            log.warning("%d queued execution(s) had no message (lost by the broker); re-enqueued: %s",
                        len(lost), ", ".join(lost[:20]))
            ids += lost
    if ids:
        log.warning("re-enqueued %d stale execution(s): %s", len(ids), ", ".join(ids[:20]))
        outbox.wake(runtime.redis().client)
    return len(ids)


# A queued run is given a new message when the counts say its own is gone (see
# shared.store.executions.requeue_unmessaged) and it has been queued at least this long.
UNMESSAGED_AFTER_S = 30.0


def _broker_run_messages(broker_url: str) -> tuple[int, list[tuple[str, float]]] | None:
    """Run messages the broker holds: (how many are queued, and for each one delivered and not
    acknowledged the run it names and its age in seconds). None when the broker is not Redis or
    does not answer (read from kombu's storage: shared/kombu_redis.held_messages)."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    from shared.kombu_redis import held_messages

    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=5)
        try:
            queued, delivered = held_messages(client, "executions")
        finally:
            client.close()
    except redis.RedisError:
        return None
    return queued, [(str(d.args[0]), d.age_s) for d in delivered if d.task == executions.RUN_TASK and d.args]


@task("workers.maintenance.purge", soft_time_limit=50, time_limit=60, idempotent=True)
def purge() -> int:
    s = runtime.settings()
    n = outbox.purge_dispatched(runtime.db())
    with runtime.db().transaction() as cur:
        from shared.store import idempotency

        n += idempotency.purge_expired(cur, s.idempotency_ttl_s)
    return n
