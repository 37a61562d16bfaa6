"""Outbox relay: publish committed outbox rows to the broker, exactly once in effect.

The API writes a row here in the same transaction as the record it announces and fires
``NOTIFY warden_outbox``. The relay (``warden relay``, any number of them) LISTENs, wakes,
and drains; the beat sweeper drains too, so a relay that is down or a broker outage loses
nothing. Publishing never happens inside a web request: Celery's publish can block while the
broker is unreachable.

A row is marked dispatched only after the broker accepted the message. If the process dies in
between, the row is published again: tasks are idempotent (guarded status transitions), so a
second message has no second effect.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import psycopg2
import psycopg2.extensions

from shared.db import Database

log = logging.getLogger(__name__)

CHANNEL = "warden_outbox"

# SKIP LOCKED so that two relays (or a relay and the sweeper) grab separate rows.
_CLAIM = """
SELECT id, task_name, args, queue FROM outbox
 WHERE dispatched_at IS NULL AND created_at <= now() - make_interval(secs => %s)
 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""

# Publish failures fail fast: the row stays pending and the next drain tries again.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def drain(db: Database, celery_app: Any, *, batch: int = 200, min_age_s: float = 0.0) -> int:
    """Publish pending rows; return how many were published. Stops at the first broker error."""
    published = 0
    while True:
        with db.transaction() as cur:
            cur.execute(_CLAIM, (min_age_s, batch))
            rows = cur.fetchall()
            if not rows:
                return published
            done: list[int] = []
            error: str | None = None
            for row in rows:
                try:
                    celery_app.send_task(
                        row["task_name"], args=row["args"], queue=row["queue"],
                        task_id=f"outbox-{row['id']}", retry=True, retry_policy=PUBLISH_RETRY_POLICY)
                except Exception as exc:  # kombu raises many types for an unreachable broker
                    error = f"{type(exc).__name__}: {exc}"[:500]
                    cur.execute("UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE id = %s",
                                (error, row["id"]))
                    break
                done.append(row["id"])
            if done:
                cur.execute("UPDATE outbox SET dispatched_at = now(), attempts = attempts + 1 "
                            "WHERE id = ANY(%s)", (done,))
            published += len(done)
        if error is not None:
            log.warning("outbox: broker refused publish, %d row(s) left pending: %s", len(rows) - len(done), error)
            return published
        if len(rows) < batch:
            return published


def pending_count(db: Database) -> int:
    row = db.fetchone("SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NULL")
    return int(row["n"]) if row else 0


def purge_dispatched(db: Database, older_than_s: int = 86400) -> int:
    return db.execute("DELETE FROM outbox WHERE dispatched_at < now() - make_interval(secs => %s)",
                      (older_than_s,))


def run_relay(db: Database, celery_app: Any, *, sweep_s: float = 5.0, stop: Any = None) -> None:
    """LISTEN for new rows and drain; also drain every ``sweep_s`` seconds. Runs until ``stop`` is set."""
    backoff = 0.5
    while stop is None or not stop.is_set():
        conn = None
        try:
            conn = psycopg2.connect(db.url, connect_timeout=5, application_name="warden-relay")
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            log.info("outbox relay listening")
            backoff = 0.5
            failing = False
            while stop is None or not stop.is_set():
                n = drain(db, celery_app)
                if n:
                    log.debug("outbox: published %d", n)
                failing = pending_count(db) > 0 and n == 0
                # While the broker is down, poll gently instead of spinning on every NOTIFY.
                timeout = min(sweep_s, 1.0) if failing else sweep_s
                if select.select([conn], [], [], timeout) != ([], [], []):
                    conn.poll()
                    conn.notifies.clear()
                    if failing:
                        time.sleep(0.5)
        except (psycopg2.Error, OSError) as exc:
            log.warning("outbox relay: database error, retrying in %.1fs: %s", backoff, exc)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            if conn is not None:
                conn.close()
