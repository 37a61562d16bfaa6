"""Many fires of one evaluation are written in one statement (``alerts.fire_many``): every
active Task gets its alerts (one per false → true transition, trigger count and
last_triggered_at raised by as many), a paused Task none, and a repeated evaluation nothing."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from shared.store import alerts
from tests.workers.signals_helpers import alerts_of, fired_minutes, make_task, send, settled


def test_one_batch_fires_many_tasks(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    tasks = [make_task(client, f"Tell me if {entity} price goes above {200 + k}", entity) for k in range(4)]
    paused = make_task(client, f"Tell me if {entity} price goes above 150", entity)
    assert client.patch(f"/api/v1/tasks/{paused['task_id']}", json={"status": "paused"}).status_code == 200
    # above all (fire), below all (re-arm), above all (fire again): two alerts per active Task.
    send(client, entity, "price", [(0, 300), (1, 100), (2, 300)])
    settled(db, workspace[0])
    for t in tasks:
        got = alerts_of(client, t["task_id"])
        assert fired_minutes(got) == [0, 2]
        assert got[1]["evidence"]["values"][-1]["value"] == 300
        row = db.fetchone("SELECT trigger_count, last_triggered_at FROM tasks WHERE id = %s", (t["task_id"],))
        assert row["trigger_count"] == 2 and row["last_triggered_at"] is not None
    assert alerts_of(client, paused["task_id"]) == []
    n = db.fetchone("SELECT count(*) AS n FROM outbox WHERE task_name = 'workers.delivery.alert' AND args->>0 IN"
                    " (SELECT id FROM alerts WHERE entity = %s)", (entity,))["n"]
    assert n == 8


def test_fire_many_is_idempotent_and_skips_inactive_tasks(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    a, b = (make_task(client, f"Tell me if {entity} price goes above {200 + k}", entity) for k in range(2))
    assert client.patch(f"/api/v1/tasks/{b['task_id']}", json={"status": "paused"}).status_code == 200
    row = db.fetchone("SELECT id, condition_id, condition_version, action_id, action_version FROM tasks"
                      " WHERE id = %s", (a["task_id"],))
    when = datetime(2024, 3, 1, tzinfo=UTC)

    def fire(task_id: str) -> alerts.Fire:
        return alerts.Fire(workspace[0], task_id, row["condition_id"], row["condition_version"], row["action_id"],
                           row["action_version"], entity, "price", when, {"x": 1})

    with db.transaction() as cur:
        first = alerts.fire_many(cur, [fire(a["task_id"]), fire(b["task_id"])])
    with db.transaction() as cur:
        again = alerts.fire_many(cur, [fire(a["task_id"]), fire(b["task_id"])])
    assert len(first) == 1 and again == []
    assert [x["alert_id"] for x in alerts_of(client, a["task_id"])] == first
    assert alerts_of(client, b["task_id"]) == []
