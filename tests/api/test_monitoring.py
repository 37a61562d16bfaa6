"""Monitoring Tasks through the real stack (seed 002): creation, dry run, 422 codes, 400 cases."""

from __future__ import annotations

from typing import Any

import pytest

WORKED = "Alert me when AAPL price rises significantly"
TASK_FIELDS = ["task_id", "intent", "concept_id", "concept_version", "condition_id", "condition_version",
               "action_id", "action_version", "entity_scope", "status", "created_at", "last_triggered_at"]


def create(client: Any, intent: str = WORKED, scope: str = "AAPL", **extra: Any) -> Any:
    body = {"intent": intent, "entity_scope": scope, "delivery": {"type": "notification"}, **extra}
    return client.post("/api/v1/tasks", json=body)


def test_worked_example_dry_run(stack, client):
    r = create(client, dry_run=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "preview"
    assert body["condition"]["strategy"] == {"type": "change",
                                             "params": {"direction": "increase", "value": 0.10, "window": "1d"}}
    assert body["action"] == {"type": "notification"}
    assert body["validation"]["valid"] is True
    assert [t["stage"] for t in body["trace"]] == [
        "classify", "resolve_primitives", "select_strategy", "fill_parameters", "generate_concept_condition",
        "bind_action", "validate", "compile"]
    assert body["concept"]["metric"] == "price"
    listed = client.get("/api/v1/tasks").json()
    assert listed["total_count"] == 0 and listed["items"] == []


def test_worked_example_create(stack, client):
    r = create(client, delivery={"type": "webhook", "endpoint": "https://myapp.com/hooks/alert"})
    assert r.status_code == 200, r.text
    task = r.json()
    assert list(task) == TASK_FIELDS
    assert task["task_id"].startswith("task_") and task["concept_id"].startswith("cpt_")
    assert task["condition_id"].startswith("cond_") and task["action_id"].startswith("act_")
    assert task["concept_version"] == task["condition_version"] == task["action_version"] == "1.0"
    assert task["status"] == "active" and task["last_triggered_at"] is None
    assert task["intent"] == WORKED and task["entity_scope"] == "AAPL"
    got = client.get(f"/api/v1/tasks/{task['task_id']}").json()
    assert {k: got[k] for k in TASK_FIELDS} == task
    assert got["condition"]["strategy"] == {"type": "change",
                                            "params": {"direction": "increase", "value": 0.1, "window": "1d"}}
    assert got["condition"]["immutable"] is True
    assert got["action"]["type"] == "webhook" and got["action"]["endpoint"] == "https://myapp.com/hooks/alert"
    assert got["concept"]["concept_id"] == task["concept_id"]
    assert got["trigger"] == {"last_triggered_at": None, "trigger_count": 0, "evaluated": True}
