"""Helpers for the signals/alerts tests: create a monitoring Task, send signals, wait for alerts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import ApiClient, wait_for

BASE = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


def make_task(client: ApiClient, intent: str, scope: str, delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    r = client.post("/api/v1/tasks", json={"intent": intent, "entity_scope": scope,
                                           "delivery": delivery or {"type": "notification"}})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def condition(client: ApiClient, task: dict[str, Any]) -> dict[str, Any]:
    r = client.get(f"/api/v1/conditions/{task['condition_id']}/versions/{task['condition_version']}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def send(client: ApiClient, entity: str, metric: str, points: list[tuple[float, float]]) -> dict[str, Any]:
    r = client.post("/api/v1/signals", json={"signals": [
        {"entity": entity, "metric": metric, "value": v, "ts": at(m)} for m, v in points]})
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def settled(db: Any, workspace_id: str, timeout: float = 10.0) -> None:
    """Wait until every evaluation and delivery outbox row of the test is published and run:
    no pending outbox rows, every series head at its newest signal, no pending alert."""
    def done() -> bool:
        row = db.fetchone(
            "SELECT (SELECT count(*) FROM outbox WHERE dispatched_at IS NULL) AS pending,"
            " (SELECT count(*) FROM signals s WHERE s.workspace_id = %s AND NOT EXISTS ("
            "   SELECT 1 FROM signal_series h WHERE h.workspace_id = s.workspace_id AND h.entity = s.entity"
            "   AND h.metric = s.metric AND h.evaluated_ts >= s.ts)) AS unevaluated,"
            " (SELECT count(*) FROM alerts WHERE workspace_id = %s AND delivery_status = 'pending'"
            "   AND delivery_type <> 'webhook') AS undelivered",
            (workspace_id, workspace_id))
        return row["pending"] == 0 and row["unevaluated"] == 0 and row["undelivered"] == 0

    wait_for(done, timeout=timeout)
    time.sleep(0.05)


def alerts_of(client: ApiClient, task_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/tasks/{task_id}/alerts?limit=100")
    assert r.status_code == 200, r.text
    return sorted(r.json()["items"], key=lambda a: a["evaluated_at"])


def fired_minutes(items: list[dict[str, Any]]) -> list[float]:
    return [(datetime.fromisoformat(a["evaluated_at"]) - BASE).total_seconds() / 60 for a in items]
