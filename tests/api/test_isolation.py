"""Every operation with an id, every workspace: generated from the OpenAPI document.

Workspace B owns one object of every kind. Each operation whose path takes an id is called with
workspace A's key on B's ids: every answer is 404 and carries none of B's data. Every list
operation answers A's key with none of B's rows. The operations come from the served document, so
a new endpoint is covered as soon as it is documented; a path parameter of a kind this test has
no object for fails the test, naming it.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.support import ApiClient, wait_for
from tests.workers.conftest import submit, wait_terminal
from tests.workers.signals_helpers import alerts_of, make_task, send

METHODS = ("get", "post", "put", "patch", "delete")


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() if path.startswith("/api/v1/")
            for method, op in item.items() if method in METHODS]


def _path_params(op: dict[str, Any]) -> list[str]:
    return [p["name"] for p in op.get("parameters", []) if p.get("in") == "path"]


def _body(op: dict[str, Any]) -> Any:
    """The documented example body (so the call reaches the lookup, not the validation), else {}."""
    if "requestBody" not in op:
        return None
    return op["requestBody"].get("content", {}).get("application/json", {}).get("example", {})


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", str(value))
    return path


@pytest.fixture()
def workspace_b(stack, db) -> tuple[ApiClient, dict[str, str], list[str]]:  # type: ignore[no-untyped-def]
    """B's key, one id of every kind, and strings that only B's data contains."""
    from shared.store import workspaces

    ws = workspaces.get_or_create_workspace(db, f"iso-b-{secrets.token_hex(6)}")
    b = ApiClient(stack.url, workspaces.create_key(db, ws.id))
    marker = f"bsecret{secrets.token_hex(8)}"
    doc = b.post("/api/v1/documents", {"name": f"{marker}-doc", "content": f"{marker} content"})
    assert doc.status_code == 201, doc.text
    eid = submit(b, task=f"Say hello {marker}", provider="local")
    entity = f"B{secrets.token_hex(3).upper()}"
    task = make_task(b, f"Tell me if {entity} price goes above 200", entity)
    send(b, entity, "price", [(0, 250)])
    wf = b.post("/api/v1/workflows", {"stages": [{"name": "only", "task": f"Say hello {marker}", "provider": "local"}]})
    assert wf.status_code in (200, 201, 202), wf.text
    guard = b.get("/api/v1/guardrails").json()["document"]
    put = b.request("PUT", "/api/v1/guardrails", json=guard)
    assert put.status_code == 200, put.text
    wait_terminal(b, eid)
    notification = wait_for(lambda: b.get("/api/v1/notifications").json()["items"], timeout=20)[0]
    assert alerts_of(b, task["task_id"])
    ids = {"execution_id": eid, "document_id": doc.json()["document_id"], "task_id": task["task_id"],
           "condition_id": task["condition_id"], "version": task["condition_version"],
           "revision": str(put.json()["revision"]), "notification_id": notification["notification_id"],
           "workflow_id": wf.json()["workflow_id"]}
    wait_for(lambda: b.get(f"/api/v1/workflows/{ids['workflow_id']}").json()["status"]
             not in ("queued", "running"), timeout=30)
    secrets_of_b = [marker, ws.id, *(v for k, v in ids.items() if k not in ("version", "revision"))]
    return b, ids, secrets_of_b


def test_every_operation_with_an_id_is_404_across_workspaces(workspace_b, client):  # type: ignore[no-untyped-def]
    b, ids, b_data = workspace_b
    a = client
    doc = a.get("/api/v1/openapi.json").json()
    with_ids = [(m, p, op) for m, p, op in _operations(doc) if _path_params(op)]
    unknown = sorted({n for _, _, op in with_ids for n in _path_params(op)} - set(ids))
    assert not unknown, f"path parameters with no object of workspace B to try: {unknown}"
    assert len(with_ids) >= 19
    answers = []
    # DELETE last: B's own calls below must still find its objects.
    for method, path, op in sorted(with_ids, key=lambda o: o[0] == "DELETE"):
        url = _fill(path, ids)
        r = a.request(method, url, json=_body(op))
        answers.append((method, path, r.status_code))
        # A 404 may name the id the caller sent; nothing else of B's may appear.
        assert not any(s in r.text for s in b_data if s not in url), (method, url, r.text[:500])
    not_found = [x for x in answers if x[2] != 404]
    assert not not_found, f"not 404 with another workspace's ids: {not_found}"
    # The same calls with B's own key find the objects: the ids above were real.
    for method, path, op in sorted(with_ids, key=lambda o: o[0] == "DELETE"):
        r = b.request(method, _fill(path, ids), json=_body(op))
        assert r.status_code != 404, (method, path, r.text[:300])  # found: past the lookup
        assert r.status_code < 400 or r.json()["detail"].get("code") != "validation_error", (method, path, r.text)


def test_list_operations_show_no_foreign_rows(workspace_b, client):  # type: ignore[no-untyped-def]
    b, ids, b_data = workspace_b
    a = client
    doc = a.get("/api/v1/openapi.json").json()
    lists = [p for m, p, op in _operations(doc) if m == "GET" and not _path_params(op)]
    assert {"/api/v1/executions", "/api/v1/tasks", "/api/v1/documents", "/api/v1/workflows",
            "/api/v1/notifications", "/api/v1/guardrails"} <= set(lists)
    for path in lists:
        for query in ("", "?limit=100"):
            mine, theirs = a.get(path + query), b.get(path + query)
            if mine.status_code == 400:  # an operation without limit
                continue
            assert mine.status_code == 200, (path, mine.text[:300])
            assert not any(s in mine.text for s in b_data), (path, mine.text[:500])
            assert theirs.status_code == 200
    # ... while B's own lists do show them (so the check above can fail).
    for path, key in (("/api/v1/executions", "execution_id"), ("/api/v1/tasks", "task_id"),
                      ("/api/v1/documents", "document_id"), ("/api/v1/workflows", "workflow_id"),
                      ("/api/v1/notifications", "notification_id")):
        assert ids[key] in b.get(path + "?limit=100").text, path


def test_signals_alerts_and_notifications_stay_in_their_workspace(stack, db, client):  # type: ignore[no-untyped-def]
    """The same entity and metric in two workspaces: A's signals fire A's task only; B's task,
    alerts and notifications see nothing of them (and B's own signals do fire it)."""
    from shared.store import workspaces

    ws_b = workspaces.get_or_create_workspace(db, f"iso-sig-{secrets.token_hex(6)}")
    b = ApiClient(stack.url, workspaces.create_key(db, ws_b.id))
    entity = f"SHARED{secrets.token_hex(3).upper()}"
    task_a = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    task_b = make_task(b, f"Tell me if {entity} price goes above 200", entity)
    send(client, entity, "price", [(0, 250)])
    wait_for(lambda: alerts_of(client, task_a["task_id"]), timeout=20)  # A's evaluation has run
    wait_for(lambda: client.get("/api/v1/notifications").json()["items"], timeout=20)
    assert alerts_of(b, task_b["task_id"]) == []
    assert b.get("/api/v1/notifications").json()["items"] == []
    assert client.get(f"/api/v1/tasks/{task_b['task_id']}/alerts").status_code == 404
    send(b, entity, "price", [(1, 10), (2, 260)])  # B's own signals do fire B's task
    fired = wait_for(lambda: alerts_of(b, task_b["task_id"]), timeout=20)
    assert len(fired) == 1 and len(alerts_of(client, task_a["task_id"])) == 1
