"""Execution events: stored first in PostgreSQL (gapless ``seq``), then published on Redis.

Pub/sub forgets; the table does not. A subscriber that missed something reads it back with
``list_events(after=seq)``. Channel per execution: ``executions:<id>``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import redis

from shared.db import Json, dumps_json
from shared.redis_client import LeanRedis, pack


def channel_for(execution_id: str) -> str:
    return f"executions:{execution_id}"


def event_dict(row: dict[str, Any]) -> dict[str, Any]:
    at = row["at"]
    return {
        "execution_id": row["execution_id"],
        "seq": row["seq"],
        "type": row["type"],
        "at": at.isoformat() if isinstance(at, datetime) else at,
        "data": row["data"],
    }


def append_event(cur: Any, execution_id: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """Append one event inside the caller's transaction. The UPDATE takes the row lock, so
    concurrent appenders get consecutive seq numbers and no gaps."""
    cur.execute(
        "WITH s AS (UPDATE executions SET event_count = event_count + 1, updated_at = now()"
        "            WHERE id = %s RETURNING event_count)"
        " INSERT INTO execution_events (execution_id, seq, type, data)"
        " SELECT %s, event_count, %s, %s FROM s"
        " RETURNING execution_id, seq, type, at, data",
        (execution_id, execution_id, type_, Json(data)),
    )
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"execution {execution_id} does not exist")
    return event_dict(row)


def publish(client: LeanRedis, events: list[dict[str, Any]], *, wait: bool = True) -> None:
    """Publish after commit, pre-packed and in one write (three publishes are on every agent
    run's path). A lost publish is repaired by the subscriber's gap fill.

    ``wait=False``: do not wait for Redis to confirm; the confirmation is read with the next
    publish on that connection (or :func:`flush`), and what a broken connection left unconfirmed
    is sent again then (subscribers drop a repeated ``seq``). The executor publishes its steps
    so and waits only for the terminal one: one wait per run instead of one per step."""
    if not events:
        return
    packed = [pack(b"PUBLISH", channel_for(ev["execution_id"]).encode(), dumps_json(ev).encode()) for ev in events]
    with contextlib.suppress(redis.RedisError, OSError):  # stored already; readers catch up from PostgreSQL
        client.call_many(packed, wait=wait)


def flush(client: LeanRedis) -> None:
    """Confirm (or send again) every ``wait=False`` publish of this process."""
    with contextlib.suppress(redis.RedisError, OSError):
        client.flush()


def list_events(cur: Any, execution_id: str, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT execution_id, seq, type, at, data FROM execution_events"
        " WHERE execution_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (execution_id, after, limit),
    )
    return [event_dict(r) for r in cur.fetchall()]
