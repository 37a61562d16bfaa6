"""Periodic housekeeping driven by celery beat, on its own queue and pool (``maintenance``), so a
backlog of runs or deliveries never delays the outbox sweep or the requeue of stale runs."""

from __future__ import annotations

import json
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
# kombu's Redis transport: a queue's messages are in lists named after it (one per priority step
# other than 0, as "<queue>\x06\x16<step>"), delivered ones in the hash "unacked" (tag → [message,
# exchange, routing key]) until acknowledged, with their delivery times in the sorted set
# "unacked_index".
_QUEUE_KEYS = ("executions", *(f"executions\x06\x16{p}" for p in (3, 6, 9)))



def _broker_run_messages(broker_url: str) -> tuple[int, list[tuple[str, float]]] | None:
    """Run messages the broker holds: (how many are queued, and for each one delivered and not
    acknowledged the run it names and its age in seconds). None when the broker is not Redis or
    does not answer."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=5)
        try:
            pipe = client.pipeline(transaction=False)
            for key in _QUEUE_KEYS:
                pipe.llen(key)
            pipe.hgetall("unacked")
            pipe.zrange("unacked_index", 0, -1, withscores=True)
            pipe.time()
            *lengths, unacked, index, now = pipe.execute()
        finally:
            client.close()
    except redis.RedisError:
        return None
    delivered_at = dict(index)
    clock = now[0] + now[1] / 1e6
    delivered: list[tuple[str, float]] = []
    for tag, raw in unacked.items():
        name = _run_named(raw)
        if name is not None:
            delivered.append((name, clock - delivered_at.get(tag, clock)))
    return int(sum(lengths)), delivered


def _run_named(raw: bytes) -> str | None:
    """The run a delivered message names, when it is a run message (kombu's envelope, its body
    Celery's protocol 2: [args, kwargs, embed])."""
    import base64

    try:
        message = json.loads(raw)[0]
        if message.get("headers", {}).get("task") != executions.RUN_TASK:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


@task("workers.maintenance.purge", soft_time_limit=50, time_limit=60, idempotent=True)
def purge() -> int:
    s = runtime.settings()
    n = outbox.purge_dispatched(runtime.db())
    with runtime.db().transaction() as cur:
        from shared.store import idempotency

        n += idempotency.purge_expired(cur, s.idempotency_ttl_s)
    return n
