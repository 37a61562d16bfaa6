"""Monitoring Task lifecycle (seed 002): paging under concurrent inserts, every PATCH rule, soft
delete, calibration → new version → rebinding, guardrails overrides, the OpenAPI document."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import psycopg2.errors
import pytest

from tests.api.monitoring_helpers import TASK_FIELDS, WORKED_STRATEGY, create, created, server_with


def _create_many(client, n: int) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return [t["task_id"] for t in pool.map(lambda _: created(client), range(n))]


def test_paging_250_with_concurrent_inserts(stack, client):
    original = set(_create_many(client, 250))
    stop = threading.Event()
    inserted: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            inserted.append(created(client, "Alert me when AAPL falls below 150")["task_id"])

    t = threading.Thread(target=writer)
    t.start()
    seen: list[str] = []
    cursor = None
    try:
        while True:
            r = client.get("/api/v1/tasks", params={"limit": 7, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["items"]) <= 7 and page["total_count"] >= 250
            seen += [i["task_id"] for i in page["items"]]
            assert all(list(i) == TASK_FIELDS for i in page["items"])
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
    finally:
        stop.set()
        t.join(30)
    assert inserted, "the writer should have inserted while we paged"
    assert len(seen) == len(set(seen)), "no task may appear twice"
    assert original <= set(seen), "every task that existed before paging must appear"
    assert seen == sorted(seen, reverse=True), "newest first"


def test_list_limits_filters_and_cursor_errors(stack, client):
    a, b = created(client), created(client)
    client.patch(f"/api/v1/tasks/{a['task_id']}", json={"status": "paused"})
    page = client.get("/api/v1/tasks").json()
    assert page["total_count"] == 2 and page["has_more"] is False and page["next_cursor"] is None
    paused = client.get("/api/v1/tasks", params={"status": "paused"}).json()
    assert [i["task_id"] for i in paused["items"]] == [a["task_id"]] and paused["total_count"] == 1
    active = client.get("/api/v1/tasks", params={"status": "active"}).json()
    assert [i["task_id"] for i in active["items"]] == [b["task_id"]]
    for params in ({"limit": 101}, {"limit": 0}, {"limit": "x"}, {"status": "running"}, {"cursor": "garbage!"}):
        r = client.get("/api/v1/tasks", params=params)
        assert r.status_code == 400, (params, r.text)
    assert client.get("/api/v1/tasks", params={"limit": 100}).status_code == 200


@pytest.mark.parametrize("field", ["concept_id", "concept_version", "condition_id", "condition", "strategy",
                                   "parameters", "params", "action_id", "action_version", "intent", "plan",
                                   "task_id", "created_at", "last_triggered_at"])
def test_patch_disallowed_field_is_400_naming_it(stack, client, field):
    task = created(client)
    r = client.patch(f"/api/v1/tasks/{task['task_id']}", json={field: "x", "status": "paused"})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "disallowed_update"
    assert field in detail["message"] and list(detail["errors"]) == [field]
    assert client.get(f"/api/v1/tasks/{task['task_id']}").json()["status"] == "active"  # nothing applied


def test_patch_names_every_disallowed_field(stack, client):
    task = created(client)
    r = client.patch(f"/api/v1/tasks/{task['task_id']}",
                     json={"strategy": {}, "action_id": "act_x", "concept_version": "2.0"})
    assert r.status_code == 400
    assert set(r.json()["detail"]["errors"]) == {"strategy", "action_id", "concept_version"}


def test_patch_operational_fields(stack, client):
    task = created(client)
    url = f"/api/v1/tasks/{task['task_id']}"
    assert client.patch(url, json={}).json()["detail"]["code"] == "empty_update"
    for bad in ({"status": "deleted"}, {"status": "preview"}, {"entity_scope": ""}, {"entity_scope": 5},
                {"condition_version": "abc"}, {"condition_version": "1.7"},
                {"delivery": {"type": "sms"}}, {"delivery": {"type": "webhook"}}):
        r = client.patch(url, json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert client.patch(url, json={"condition_version": "1.7"}).json()["detail"]["code"] == "unknown_condition_version"
    r = client.patch(url, data="not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400

    r = client.patch(url, json={"status": "paused"})
    assert r.status_code == 200 and list(r.json()) == TASK_FIELDS and r.json()["status"] == "paused"
    r = client.patch(url, json={"status": "active", "entity_scope": "premium_users"})
    assert r.json()["status"] == "active" and r.json()["entity_scope"] == "premium_users"

    r = client.patch(url, json={"delivery": {"type": "webhook", "endpoint": "https://myapp.com/hooks/new"}})
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["action_id"] == task["action_id"] and moved["action_version"] == "1.1"
    detail = client.get(url).json()
    assert detail["action"]["endpoint"] == "https://myapp.com/hooks/new" and detail["action"]["version"] == "1.1"
    # the logic is untouched by operational changes
    assert (detail["condition_version"], detail["concept_version"]) == ("1.0", "1.0")
    assert detail["condition"]["strategy"] == WORKED_STRATEGY

    r = client.patch(url, json={"delivery": {"type": "webhook", "endpoint": "gopher://x.example/"}})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "action_binding_failed"


def test_soft_delete(stack, client):
    task = created(client)
    url = f"/api/v1/tasks/{task['task_id']}"
    r = client.delete(url)
    assert r.status_code == 200 and r.json()["status"] == "deleted" and list(r.json()) == TASK_FIELDS
    got = client.get(url)
    assert got.status_code == 200 and got.json()["status"] == "deleted"
    assert got.json()["trigger"]["evaluated"] is False
    assert [i["task_id"] for i in client.get("/api/v1/tasks", params={"status": "deleted"}).json()["items"]] == [
        task["task_id"]]
    assert client.get("/api/v1/tasks", params={"status": "active"}).json()["total_count"] == 0
    r = client.patch(url, json={"status": "active"})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "task_deleted"
    assert client.delete(url).status_code == 200  # deleting again is harmless
    assert client.delete("/api/v1/tasks/task_nope").status_code == 404
    assert client.get("/api/v1/tasks/task_nope").status_code == 404


def test_calibration_new_versions_then_rebinding(stack, client):
    task = created(client)
    cond_id, url = task["condition_id"], f"/api/v1/tasks/{task['task_id']}"
    got = client.get(f"/api/v1/conditions/{cond_id}").json()
    assert got["latest"]["version"] == "1.0" and [v["version"] for v in got["versions"]] == ["1.0"]

    noisy = client.post(f"/api/v1/conditions/{cond_id}/apply-calibration", json={"feedback": "too_noisy"})
    assert noisy.status_code == 201, noisy.text
    v11 = noisy.json()
    assert v11["version"] == "1.1" and v11["created_from"]["from_version"] == "1.0"
    assert v11["strategy"]["params"]["value"] > 0.10  # less sensitive: needs a bigger rise

    quiet = client.post(f"/api/v1/conditions/{cond_id}/apply-calibration", json={"feedback": "too_quiet"}).json()
    assert quiet["version"] == "1.2" and quiet["strategy"]["params"]["value"] == 0.10
    explicit = client.post(f"/api/v1/conditions/{cond_id}/apply-calibration", json={"params": {"value": 0.2}})
    assert explicit.status_code == 201 and explicit.json()["version"] == "1.3"
    assert explicit.json()["strategy"]["params"] == {"direction": "increase", "value": 0.2, "window": "1d"}

    for bad in ({"params": {"value": 5}}, {"params": {"zscore": 3}}, {"params": {}}, {"feedback": "meh"},
                {"params": {"value": 0.2}, "feedback": "too_noisy"}, {}, {"params": {"window": "3 fortnights"}},
                {"params": {"value": "high"}}, {"params": {"direction": "sideways"}}):
        r = client.post(f"/api/v1/conditions/{cond_id}/apply-calibration", json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert client.post("/api/v1/conditions/cond_nope/apply-calibration",
                       json={"feedback": "too_noisy"}).status_code == 404

    # versions are immutable; the task stays pinned until it is rebound
    assert client.get(f"/api/v1/conditions/{cond_id}/versions/1.0").json()["strategy"] == WORKED_STRATEGY
    assert client.get(f"/api/v1/conditions/{cond_id}/versions/9.9").status_code == 404
    assert client.get(url).json()["condition_version"] == "1.0"
    listing = client.get(f"/api/v1/conditions/{cond_id}").json()
    assert [v["version"] for v in listing["versions"]] == ["1.0", "1.1", "1.2", "1.3"]
    assert listing["latest"]["version"] == "1.3"

    r = client.patch(url, json={"condition_version": "1.1"})
    assert r.status_code == 200 and r.json()["condition_version"] == "1.1"
    detail = client.get(url).json()
    assert detail["condition"]["version"] == "1.1" and detail["condition"]["strategy"] == v11["strategy"]
    assert client.patch(url, json={"condition_version": "1.9"}).status_code == 400


def test_explain_by_condition_and_by_intent(stack, client):
    task = created(client)
    r = client.post("/api/v1/conditions/explain",
                    json={"condition_id": task["condition_id"], "condition_version": "1.0"})
    assert r.status_code == 200, r.text
    ex = r.json()
    assert ex["strategy"] == WORKED_STRATEGY
    value = next(p for p in ex["parameters"] if p["name"] == "value")
    steps = [s["step"] for s in value["chain"]]
    assert steps[0] == "severity word" and "prior" in steps and value["chain"][0]["value"] == "significantly"
    assert "significantly" in value["sentence"] and "change.high" in value["sentence"]
    assert len(ex["sentences"]) == 8  # one per stage

    by_intent = client.post("/api/v1/conditions/explain", json={"intent": "Alert me when AAPL falls below 150",
                                                                "entity_scope": "AAPL"})
    assert by_intent.status_code == 200, by_intent.text
    assert by_intent.json()["strategy"] == {"type": "threshold", "params": {"direction": "below", "value": 150}}
    assert client.post("/api/v1/conditions/explain", json={"intent": "hello there",
                                                           "entity_scope": "x"}).status_code == 422
    for bad in ({}, {"intent": "x"}, {"condition_id": "c", "intent": "x", "entity_scope": "y"}, {"nope": 1}):
        assert client.post("/api/v1/conditions/explain", json=bad).status_code == 400, bad
    assert client.post("/api/v1/conditions/explain", json={"condition_id": "cond_nope"}).status_code == 404


def test_versions_are_immutable_in_the_database(stack, client, db):
    task = created(client)
    # The refusal must be the immutability trigger's, not some other error (a foreign key would
    # already refuse most deletes): its SQLSTATE and its message.
    rows = [("concepts", task["concept_id"]), ("conditions", task["condition_id"]), ("actions", task["action_id"])]
    for table, row_id in rows:
        before = db.fetchone(f"SELECT * FROM {table} WHERE id = %s", (row_id,))
        for statement in (f"UPDATE {table} SET id = id WHERE id = %s", f"DELETE FROM {table} WHERE id = %s"):
            with pytest.raises(psycopg2.errors.RestrictViolation, match="immutable versions"):
                db.execute(statement, (row_id,))
        assert db.fetchone(f"SELECT * FROM {table} WHERE id = %s", (row_id,)) == before


def test_guardrails_override_changes_only_later_tasks(stack, client, settings, db):
    default = client.get("/api/v1/guardrails").json()
    assert default["source"] == "default" and default["revision"] == 0
    before = created(client)

    doc = default["document"]
    doc["priors"]["change.high"]["value"] = 0.2
    bad = client.request("PUT", "/api/v1/guardrails", json={**doc, "strategy_priority": ["telepathy"]})
    assert bad.status_code == 400 and bad.json()["detail"]["code"] == "invalid_guardrails"
    assert bad.json()["detail"]["errors"]["document"]
    r = client.request("PUT", "/api/v1/guardrails", json=doc)
    assert r.status_code == 200, r.text
    stored = r.json()
    assert stored["source"] == "workspace" and stored["revision"] == 1
    assert stored["version"] == f"{default['version']}+r1"
    assert [v["revision"] for v in client.get("/api/v1/guardrails").json()["versions"]] == [0, 1]

    after = created(client)
    old = client.get(f"/api/v1/tasks/{before['task_id']}").json()["condition"]
    new = client.get(f"/api/v1/tasks/{after['task_id']}").json()["condition"]
    assert old["strategy"]["params"]["value"] == 0.1 and old["guardrails_version"] == default["version"]
    assert new["strategy"]["params"]["value"] == 0.2 and new["guardrails_version"] == stored["version"]
    assert create(client, dry_run=True).json()["guardrails_version"] == stored["version"]
    # calibrating the old condition stays within the guardrails it was compiled with
    cal = client.post(f"/api/v1/conditions/{before['condition_id']}/apply-calibration", json={"feedback": "too_quiet"})
    assert cal.json()["guardrails_version"] == default["version"]

    assert client.get("/api/v1/guardrails/versions/1").json()["document"]["priors"]["change.high"]["value"] == 0.2
    assert client.get("/api/v1/guardrails/versions/0").json()["version"] == default["version"]
    assert client.get("/api/v1/guardrails/versions/7").status_code == 404
    second = client.request("PUT", "/api/v1/guardrails", json=doc).json()  # each PUT is a new version
    assert second["revision"] == 2 and second["version"] != stored["version"]
    with server_with(settings, db) as other:  # other workspaces keep the default
        assert create(other, dry_run=True).json()["condition"]["strategy"] == WORKED_STRATEGY
    not_object = client.request("PUT", "/api/v1/guardrails", data="[]", headers={"Content-Type": "application/json"})
    assert not_object.status_code == 400


def test_openapi_lists_monitoring_routes(stack, client):
    doc = client.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    for path, method in [("/api/v1/tasks", "get"), ("/api/v1/tasks", "post"), ("/api/v1/tasks/{task_id}", "get"),
                         ("/api/v1/tasks/{task_id}", "patch"), ("/api/v1/tasks/{task_id}", "delete"),
                         ("/api/v1/guardrails", "get"), ("/api/v1/guardrails", "put"),
                         ("/api/v1/guardrails/versions/{revision}", "get"),
                         ("/api/v1/conditions/{condition_id}", "get"),
                         ("/api/v1/conditions/{condition_id}/versions/{version}", "get"),
                         ("/api/v1/conditions/explain", "post"),
                         ("/api/v1/conditions/{condition_id}/apply-calibration", "post")]:
        assert method in paths.get(path, {}), (path, method)
    for name in ("MonitoringTaskRequest", "MonitoringTask", "DryRunResult", "MonitoringTaskList"):
        assert name in doc["components"]["schemas"]
    assert set(doc["components"]["schemas"]["MonitoringTask"]["properties"]) == set(TASK_FIELDS)
