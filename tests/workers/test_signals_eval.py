"""Evaluation: each strategy fires exactly at its boundary, once per false→true transition,
re-arms, follows the ordering rule, ignores paused/deleted Tasks, survives redelivery, and
replay agrees with live evaluation."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from tests.workers.signals_helpers import (
    BASE,
    alerts_of,
    at,
    condition,
    fired_minutes,
    make_task,
    send,
    settled,
)

# (intent, metric, values at minutes 0, 1, 2, …, minute expected to fire). The value one step
# before the boundary never fires; the boundary value does.
BOUNDARIES = [
    ("Tell me if {e} price goes above 200", "price", [190, 199.99, 200], 2),
    ("Alert me when {e} falls below 150", "price", [160, 150.01, 150], 2),
    ("Alert me when {e} price drops more than 5%", "price", [100, 95.01, 95], 2),
    ("Alert me when {e} price rises more than 10%", "price", [100, 109.99, 110], 2),
]


@pytest.mark.parametrize(("intent", "metric", "values", "fires_at"), BOUNDARIES)
def test_fires_exactly_at_boundary(stack, client, db, workspace, intent, metric, values, fires_at):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, intent.format(e=entity), entity)
    assert condition(client, task)["metric"] == metric
    send(client, entity, metric, list(enumerate(values)))
    settled(db, workspace[0])
    got = alerts_of(client, task["task_id"])
    assert fired_minutes(got) == [fires_at]
    ev = got[0]["evidence"]
    assert ev["condition_version"] == task["condition_version"] and ev["params"] and ev["window"]["seconds"] > 0
    assert ev["values"][-1]["value"] == values[fires_at]
    t = client.get(f"/api/v1/tasks/{task['task_id']}").json()
    assert t["last_triggered_at"] is not None


@pytest.mark.parametrize(("delta", "fires"), [(-0.01, []), (0.0, [6])])
def test_anomaly_boundary(stack, client, db, workspace, delta, fires):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Alert me when {entity} price is unusual", entity)
    z = condition(client, task)["strategy"]["params"]["zscore"]
    baseline = [10, 12] * 3  # mean 11, population stdev 1: the latest value's z is (value - 11)
    send(client, entity, "price", list(enumerate([*baseline, 11 + z + delta])))
    settled(db, workspace[0])
    assert fired_minutes(alerts_of(client, task["task_id"])) == fires


def test_transition_rearm_and_no_storm(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    # above, above, above (one alert), below (re-arm), above (second alert), above
    send(client, entity, "price", [(0, 201), (1, 205), (2, 210)])
    send(client, entity, "price", [(3, 150)])
    send(client, entity, "price", [(4, 220), (5, 230)])
    settled(db, workspace[0])
    assert fired_minutes(alerts_of(client, task["task_id"])) == [0, 4]


def test_late_signal_is_stored_but_cannot_refire_the_past(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    send(client, entity, "price", [(0, 100), (10, 100)])
    settled(db, workspace[0])
    late = send(client, entity, "price", [(5, 500)])  # older than the evaluated head
    assert late == {"accepted": 1, "stored": 1, "duplicates": 0}
    settled(db, workspace[0])
    assert alerts_of(client, task["task_id"]) == []
    # Out of order inside one batch: evaluated in ts order.
    send(client, entity, "price", [(13, 100), (11, 300), (12, 100)])
    settled(db, workspace[0])
    assert fired_minutes(alerts_of(client, task["task_id"])) == [11]


def test_redelivery_produces_one_alert(stack, client, db, workspace, celery_app):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    send(client, entity, "price", [(0, 250)])
    settled(db, workspace[0])
    for _ in range(3):  # the same message again, as a broker redelivery would
        celery_app.send_task("workers.evaluation.evaluate", args=[workspace[0], [[entity, "price"]]],
                             queue="evaluation")
    from workers.evaluation import evaluate_groups

    assert evaluate_groups(workspace[0], [[entity, "price"]]) == []
    settled(db, workspace[0])
    assert len(alerts_of(client, task["task_id"])) == 1
    dup = send(client, entity, "price", [(0, 999)])
    assert dup["duplicates"] == 1
    settled(db, workspace[0])
    assert len(alerts_of(client, task["task_id"])) == 1


@pytest.mark.parametrize("status", ["paused", "deleted"])
def test_paused_and_deleted_never_fire(stack, client, db, workspace, status):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    if status == "paused":
        assert client.patch(f"/api/v1/tasks/{task['task_id']}", json={"status": "paused"}).status_code == 200
    else:
        assert client.delete(f"/api/v1/tasks/{task['task_id']}").status_code == 200
    send(client, entity, "price", [(0, 250)])
    settled(db, workspace[0])
    assert alerts_of(client, task["task_id"]) == []
    assert client.get(f"/api/v1/tasks/{task['task_id']}").json()["last_triggered_at"] is None


def test_absence_fires_at_window_and_rearms(stack, client, db, workspace):
    from workers.evaluation import sweep_absence

    entity = f"svc{secrets.token_hex(3)}"
    task = make_task(client, f"Alert me when the {entity} heartbeat stops", entity)
    cond = condition(client, task)
    assert cond["strategy"]["type"] == "absence"
    window = timedelta(seconds=cond["plan"]["window_seconds"]) if "plan" in cond else None
    window = window or timedelta(hours=1)
    send(client, entity, cond["metric"], [(0, 1)])
    settled(db, workspace[0])
    last = BASE
    assert not [a for a in sweep_absence(last + window - timedelta(seconds=1))
                if a in {x["alert_id"] for x in alerts_of(client, task["task_id"])}]
    assert alerts_of(client, task["task_id"]) == []
    sweep_absence(last + window)
    sweep_absence(last + 2 * window)  # still silent: no second alert
    settled(db, workspace[0])
    got = alerts_of(client, task["task_id"])
    assert len(got) == 1 and got[0]["evaluated_at"] == (last + window).isoformat()
    minutes = (2 * window).total_seconds() / 60 + 1
    send(client, entity, cond["metric"], [(minutes, 1)])  # re-arms
    settled(db, workspace[0])
    sweep_absence(BASE + timedelta(minutes=minutes) + window)
    settled(db, workspace[0])
    assert len(alerts_of(client, task["task_id"])) == 2


def test_replay_equals_live(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    values = [190, 210, 220, 180, 205, 199, 201, 250, 100, 300]
    send(client, entity, "price", list(enumerate(values[:5])))
    send(client, entity, "price", [(i + 5, v) for i, v in enumerate(values[5:])])
    settled(db, workspace[0])
    live = [a["evaluated_at"] for a in alerts_of(client, task["task_id"])]
    assert len(live) == 4
    r = client.post(f"/api/v1/conditions/{task['condition_id']}/replay",
                    json={"version": task["condition_version"], "from": at(0), "to": at(60)})
    assert r.status_code == 200, r.text
    assert [f["at"] for f in r.json()["fired"]] == live
    assert r.json()["fire_count"] == 4 and r.json()["evaluated_points"] == len(values)
    later = client.post(f"/api/v1/conditions/{task['condition_id']}/replay", json={"from": at(8), "to": at(60)})
    assert [f["at"] for f in later.json()["fired"]] == [at(9)]
    assert client.post(f"/api/v1/conditions/{task['condition_id']}/replay",
                       json={"from": at(5), "to": at(1)}).status_code == 400
    assert client.post("/api/v1/conditions/cond_nope/replay",
                       json={"from": at(0), "to": at(1)}).status_code == 404
