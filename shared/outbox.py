"""Outbox relay: publish committed outbox rows to the broker, exactly once in effect.

Whoever writes an outbox row (the API, a worker) does so in the same transaction as the record it
announces, then calls :func:`wake` after commit, a Redis PUBLISH on ``warden:outbox``. The relay
(``warden relay``, any number of them) wakes on that, and also polls every ``sweep_s`` seconds,
so a lost wake-up only delays a row; the beat sweeper drains too, so a relay that is down or a
broker outage loses nothing. Publishing never happens inside a web request: Celery's publish can
block while the broker is unreachable.

(Not PostgreSQL NOTIFY: a notifying transaction holds a global lock during commit, which halved
commit throughput under 50 concurrent writers here.)

A row is marked dispatched only after the broker accepted the message. If the process dies in
between, the row is published again: tasks are idempotent (guarded status transitions), so a
second message has no second effect.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from typing import Any

import redis

from shared.celery_publish import Publisher, Row
from shared.db import Database
from shared.redis_client import pack

log = logging.getLogger(__name__)

CHANNEL = "warden:outbox"

# SKIP LOCKED so that two relays (or a relay and the sweeper) grab separate rows. Rows whose
# `publish_after` lies ahead are being published by the API process that wrote them (api/dispatch.py).
_CLAIM = """
SELECT id, task_name, args, queue FROM outbox
 WHERE dispatched_at IS NULL AND created_at <= now() - make_interval(secs => %s)
   AND (publish_after IS NULL OR publish_after <= now())
 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""

# Publish failures fail fast: the row stays pending and the next drain tries again.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def wake(client: redis.Redis) -> None:
    """Tell relays there is something to publish (after commit). Best effort by design."""
    with contextlib.suppress(redis.RedisError):
        client.publish(CHANNEL, b"")


#: :func:`wake` pre-packed, for a :class:`~shared.redis_client.LeanRedis` (the API's waker).
WAKE = pack(b"PUBLISH", CHANNEL.encode(), b"")


def publish_rows(celery_app: Any, rows: list[Row]) -> tuple[list[int], str | None]:
    """Publish ``(outbox id, task name, args, queue)`` rows in order until the broker refuses one:
    (the ids published, the refusal or None). Shared by the relay and the API's dispatcher; one
    pipelined write per call on a Redis broker (shared/celery_publish.py)."""
    publisher = _publishers.get(celery_app)
    if publisher is None:
        publisher = _publishers[celery_app] = Publisher(celery_app, PUBLISH_RETRY_POLICY)
    return publisher.publish(rows)


_publishers: weakref.WeakKeyDictionary[Any, Publisher] = weakref.WeakKeyDictionary()


def record_published(cur: Any, ids: list[int]) -> None:
    if ids:
        cur.execute("UPDATE outbox SET dispatched_at = now(), attempts = attempts + 1"
                    " WHERE id = ANY(%s) AND dispatched_at IS NULL", (ids,))


def record_refused(cur: Any, ids: list[int], error: str, *, release: bool = False) -> None:
    """Count a refused attempt; ``release`` also hands rows an API process held (publish_after)
    to the relay at once."""
    if ids:
        cur.execute("UPDATE outbox SET attempts = attempts + 1, last_error = %s"
                    + (", publish_after = NULL" if release else "")
                    + " WHERE id = ANY(%s) AND dispatched_at IS NULL", (error, ids))


def drain(db: Database, celery_app: Any, *, batch: int = 200, min_age_s: float = 0.0) -> int:
    """Publish pending rows; return how many were published. Stops at the first broker error."""
    return _drain(db, celery_app, batch=batch, min_age_s=min_age_s)[0]


def _drain(db: Database, celery_app: Any, *, batch: int, min_age_s: float) -> tuple[int, bool]:
    """(published, whether the broker refused a publish)."""
    published = 0
    while True:
        with db.transaction() as cur:
            cur.execute(_CLAIM, (min_age_s, batch))
            rows = cur.fetchall()
            if not rows:
                return published, False
            done, error = publish_rows(celery_app, [(r["id"], r["task_name"], r["args"], r["queue"]) for r in rows])
            record_published(cur, done)
            if error is not None:
                record_refused(cur, [rows[len(done)]["id"]], error)
            published += len(done)
        if error is not None:
            log.warning("outbox: broker refused publish, %d row(s) left pending: %s", len(rows) - len(done), error)
            return published, True
        if len(rows) < batch:
            return published, False


def pending_count(db: Database) -> int:
    row = db.fetchone("SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NULL")
    return int(row["n"]) if row else 0


def purge_dispatched(db: Database, older_than_s: int = 86400) -> int:
    return db.execute("DELETE FROM outbox WHERE dispatched_at < now() - make_interval(secs => %s)",
                      (older_than_s,))


def run_relay(db: Database, celery_app: Any, redis_url: str, *, sweep_s: float = 1.0, stop: Any = None) -> None:
    """Drain on every wake-up and at least every ``sweep_s``; runs until ``stop`` is set.

    Database or Redis trouble is retried with capped backoff; while the broker refuses, the loop
    polls at most once a second instead of spinning on every wake-up.
    """
    backoff = 0.5
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=sweep_s + 5)
    while stop is None or not stop.is_set():
        pubsub = None
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            log.info("outbox relay listening")
            backoff = 0.5
            while stop is None or not stop.is_set():
                # Back off only on a broker refusal: a row that committed after the claim is simply
                # picked up by the next pass (its wake-up is already queued).
                _, failing = _drain(db, celery_app, batch=200, min_age_s=0.0)
                if failing:
                    time.sleep(min(sweep_s, 1.0))
                msg = pubsub.get_message(timeout=sweep_s)
                while msg is not None:  # collapse a burst of wake-ups into one drain
                    msg = pubsub.get_message(timeout=0)
        except Exception as exc:  # database or Redis down: keep the relay alive, retry
            log.warning("outbox relay: %s, retrying in %.1fs", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    pubsub.close()
