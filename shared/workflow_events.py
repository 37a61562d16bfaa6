"""Workflow events on Redis (channel ``workflows:<id>``), published after commit; stored first
in ``workflow_events`` with a gapless ``seq`` so readers can catch up from PostgreSQL."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import redis


def channel_for(workflow_id: str) -> str:
    return f"workflows:{workflow_id}"


def publish(client: redis.Redis, events: list[dict[str, Any]]) -> None:
    if not events:
        return
    pipe = client.pipeline(transaction=False)
    for ev in events:
        pipe.publish(channel_for(ev["workflow_id"]), json.dumps(ev, separators=(",", ":"), default=str))
    with contextlib.suppress(redis.RedisError):  # stored already
        pipe.execute()
