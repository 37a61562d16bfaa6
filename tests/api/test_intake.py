"""POST /api/v1/tasks with a `task` body: the seed 000 contract, status code by status code."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from tests.support import ApiClient

HIPAA = {"task": "Summarize the discharge note. Redact direct identifiers.", "compliance_policy": "hipaa",
         "budget_cents": 2000}


def test_created_with_location_and_websocket_url(client: ApiClient) -> None:
    r = client.post("/api/v1/tasks", HIPAA)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"execution_id", "status", "websocket_url"}
    assert body["execution_id"].startswith("exec_")
    assert body["status"] == "queued"
    assert body["websocket_url"].startswith(f"ws://127.0.0.1:{client.base_url.rsplit(':', 1)[1]}/ws/executions/"
                                            f"{body['execution_id']}?token=")
    assert r.headers["Location"] == f"/api/v1/executions/{body['execution_id']}"
    got = client.get(r.headers["Location"]).json()
    assert got["task"] == HIPAA["task"]
    assert got["compliance_policy"] == "hipaa"
    assert got["budget_cents"] == 2000
    assert got["effective_permissions"] == ["fs:read", "fs:write", "pii:redact"]


def test_defaults(client: ApiClient) -> None:
    r = client.post("/api/v1/tasks", {"task": "List my documents"})
    assert r.status_code == 201
    e = client.get(r.headers["Location"]).json()
    assert e["compliance_policy"] == "default"
    assert e["budget_cents"] == 10000
    assert e["provider"] == "local"
    assert e["requested_permissions"] is None
    assert e["denied_permissions"] == []
    assert e["status"] in ("queued", "running", "succeeded")  # a worker may already have run it


def test_legal_alias_is_stored_as_legal_privilege(client: ApiClient) -> None:
    r = client.post("/api/v1/tasks", {"task": "Review the memo", "compliance_policy": "legal"})
    assert r.status_code == 201
    assert client.get(r.headers["Location"]).json()["compliance_policy"] == "legal_privilege"


def test_exact_403_body_when_no_permission_survives_the_ceiling(client: ApiClient) -> None:
    r = client.post("/api/v1/tasks", {"task": "Fetch the page", "compliance_policy": "hipaa",
                                      "permissions": ["network:http:read"]})
    assert r.status_code == 403
    assert r.json() == {"detail": {
        "message": "No effective permissions after applying 'hipaa' compliance policy",
        "denied": [{"permission": "network:http:read", "reason": "exceeds_policy_ceiling",
                    "detail": "Permission is not within the HIPAA policy allowed set"}],
    }}


def test_partially_denied_permissions_are_recorded(client: ApiClient, db) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/tasks", {"task": "Email the summary", "compliance_policy": "hipaa",
                                      "permissions": ["email:send", "network:http:read"]})
    assert r.status_code == 201
    e = client.get(r.headers["Location"]).json()
    assert e["effective_permissions"] == ["email:send"]
    assert e["denied_permissions"] == [{"permission": "network:http:read", "reason": "exceeds_policy_ceiling",
                                        "detail": "Permission is not within the HIPAA policy allowed set"}]
    first = client.get(r.headers["Location"] + "/events").json()["items"][0]
    assert first["seq"] == 1 and first["type"] == "execution.queued"
    assert first["data"]["denied_permissions"] == e["denied_permissions"]


def test_unknown_policy_is_400(client: ApiClient) -> None:
    r = client.post("/api/v1/tasks", {"task": "x", "compliance_policy": "gdpr"})
    assert r.status_code == 400
    assert r.json()["detail"]["code"] == "invalid_compliance_policy"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"task"', b"", b"null", b"\xff\xfe"])
def test_malformed_or_non_object_body_is_400(client: ApiClient, raw: bytes) -> None:
    r = client.request("POST", "/api/v1/tasks", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()["detail"]) >= {"message", "code"}


@pytest.mark.parametrize("body", [{}, {"task": "a", "intent": "b"}, {"budget_cents": 100}])
def test_neither_or_both_task_and_intent_is_400(client: ApiClient, body: dict) -> None:
    r = client.post("/api/v1/tasks", body)
    assert r.status_code == 400
    assert r.json()["detail"]["code"] == "invalid_request_shape"


@pytest.mark.parametrize(("body", "field"), [
    ({"task": ""}, "task"),
    ({"task": "   "}, "task"),
    ({"task": 5}, "task"),
    ({"task": "x", "budget_cents": 99}, "budget_cents"),
    ({"task": "x", "budget_cents": 1_000_001}, "budget_cents"),
    ({"task": "x", "budget_cents": "500"}, "budget_cents"),
    ({"task": "x", "budget_cents": 500.5}, "budget_cents"),
    ({"task": "x", "budget_cents": True}, "budget_cents"),
    ({"task": "x", "permissions": "fs:read"}, "permissions"),
    ({"task": "x", "permissions": [1]}, "permissions"),
    ({"task": "x", "provider": "mistral"}, "provider"),
    ({"task": "x", "webhook_url": "not a url"}, "webhook_url"),
    ({"task": "x", "webhook_url": "ftp://example.com/x"}, "webhook_url"),
    ({"task": "x", "compliance_policy": 7}, "compliance_policy"),
    ({"task": "x", "surprise": 1}, "surprise"),
])
def test_field_errors_are_422_naming_the_field(client: ApiClient, body: dict, field: str) -> None:
    r = client.post("/api/v1/tasks", body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "validation_error"
    assert field in detail["errors"]


@pytest.mark.parametrize("budget", [100, 1_000_000])
def test_budget_range_is_inclusive(client: ApiClient, budget: int) -> None:
    assert client.post("/api/v1/tasks", {"task": "x", "budget_cents": budget}).status_code == 201


def test_oversized_body_is_413_in_the_envelope(client: ApiClient) -> None:
    r = client.post("/api/v1/tasks", {"task": "x" * (1024 * 1024 + 10)})
    assert r.status_code == 413
    assert r.json()["detail"]["code"] == "payload_too_large"


def test_intent_body_is_routed_to_monitoring(stack, client: ApiClient) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/tasks", {"intent": "Alert me when AAPL price rises significantly",
                                      "entity_scope": "AAPL", "delivery": {"type": "notification"},
                                      "dry_run": True})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "preview"


def test_missing_unknown_and_revoked_keys_are_401(server, db, workspace) -> None:  # type: ignore[no-untyped-def]
    from shared.store import workspaces

    assert ApiClient(server.url, None).post("/api/v1/tasks", {"task": "x"}).status_code == 401
    r = ApiClient(server.url, "wdn_nothere_" + "a" * 40).post("/api/v1/tasks", {"task": "x"})
    assert r.status_code == 401
    assert r.json() == {"detail": {"message": "Missing or invalid API key", "code": "unauthorized"}}
    assert ApiClient(server.url, "garbage").get("/api/v1/executions").status_code == 401
    key = workspaces.create_key(db, workspace[0])
    assert ApiClient(server.url, key).get("/api/v1/executions").status_code == 200
    # right prefix, wrong secret
    assert ApiClient(server.url, key[:-4] + "zzzz").get("/api/v1/executions").status_code == 401
    assert workspaces.revoke_key(db, key)
    assert ApiClient(server.url, key).get("/api/v1/executions").status_code == 401


def test_workspaces_are_isolated(server, db) -> None:  # type: ignore[no-untyped-def]
    from shared.store import workspaces

    a = workspaces.get_or_create_workspace(db, "iso-a")
    b = workspaces.get_or_create_workspace(db, "iso-b")
    ca = ApiClient(server.url, workspaces.create_key(db, a.id))
    cb = ApiClient(server.url, workspaces.create_key(db, b.id))
    loc = ca.post("/api/v1/tasks", {"task": "mine"}).headers["Location"]
    assert ca.get(loc).status_code == 200
    other = cb.get(loc)
    assert other.status_code == 404
    assert other.json()["detail"]["code"] == "execution_not_found"
    assert cb.get(loc + "/events").status_code == 404
    assert all(e["task"] != "mine" or False for e in cb.get("/api/v1/executions?limit=100").json()["items"])


def test_idempotency_key_replays_and_creates_once(client: ApiClient, db) -> None:  # type: ignore[no-untyped-def]
    h = {"Idempotency-Key": "order-42"}
    first = client.post("/api/v1/tasks", HIPAA, headers=h)
    second = client.post("/api/v1/tasks", HIPAA, headers=h)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert first.headers["Location"] == second.headers["Location"]
    assert client.get("/api/v1/executions").json()["total_count"] == 1
    conflict = client.post("/api/v1/tasks", {**HIPAA, "budget_cents": 3000}, headers=h)
    assert conflict.status_code == 422
    assert conflict.json()["detail"]["code"] == "idempotency_key_reused"
    assert client.get("/api/v1/executions").json()["total_count"] == 1


def test_idempotency_key_is_scoped_to_the_workspace(server, db) -> None:  # type: ignore[no-untyped-def]
    from shared.store import workspaces

    keys = [workspaces.create_key(db, workspaces.get_or_create_workspace(db, f"idem-{i}").id) for i in (1, 2)]
    ids = {ApiClient(server.url, k).post("/api/v1/tasks", {"task": "same"},
                                         headers={"Idempotency-Key": "shared"}).json()["execution_id"]
           for k in keys}
    assert len(ids) == 2


def test_concurrent_requests_with_one_key_create_one_execution(client: ApiClient) -> None:
    body = {"task": "race", "budget_cents": 500}

    def post() -> tuple[int, str]:
        c = ApiClient(client.base_url, client.key)
        r = c.post("/api/v1/tasks", body, headers={"Idempotency-Key": "race-1"})
        return r.status_code, json.dumps(r.json(), sort_keys=True)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(), range(8)))
    assert {s for s, _ in results} == {201}
    assert len({b for _, b in results}) == 1
    assert client.get("/api/v1/executions").json()["total_count"] == 1
