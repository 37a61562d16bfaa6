"""Documents API, the compliance key set, certificates/cancel routes: contract and isolation."""

from __future__ import annotations

import secrets

from tests.support import ApiClient


def test_create_list_get_replace(client):
    r = client.post("/api/v1/documents", json={"name": "note", "content": "hello", "labels": ["phi", "phi"]})
    assert r.status_code == 201 and r.headers["Location"].endswith(r.json()["document_id"])
    doc = r.json()
    assert doc["labels"] == ["phi"] and doc["size"] == 5 and "content" not in doc
    got = client.get(f"/api/v1/documents/{doc['document_id']}").json()
    assert got["content"] == "hello" and got["created_by"] is None
    r = client.post("/api/v1/documents", json={"name": "note", "content": "bye", "labels": []})
    assert r.status_code == 200 and r.json()["document_id"] == doc["document_id"]
    client.post("/api/v1/documents", json={"name": "ledger", "content": "1", "labels": ["financial"]})
    page = client.get("/api/v1/documents?limit=1").json()
    assert len(page["items"]) == 1 and page["has_more"] and page["next_cursor"]
    rest = client.get(f"/api/v1/documents?limit=1&cursor={page['next_cursor']}").json()
    assert {page["items"][0]["name"], rest["items"][0]["name"]} == {"note", "ledger"}
    assert [d["name"] for d in client.get("/api/v1/documents?label=financial").json()["items"]] == ["ledger"]


def test_validation(client):
    cases = [({"content": "x"}, "name"), ({"name": "a", "content": "x", "extra": 1}, "extra"),
             ({"name": " ", "content": "x"}, "name"),
             ({"name": "a", "content": "x", "labels": ["Bad Label"]}, "labels"),
             ({"name": "a", "content": 3}, "content")]
    for body, field in cases:
        r = client.post("/api/v1/documents", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"]["code"] == "validation_error" and field in r.json()["detail"]["errors"]
    assert client.post("/api/v1/documents", json=[1]).status_code == 400


def test_workspace_isolation(client, server, db):
    from shared.store import workspaces

    doc = client.post("/api/v1/documents", json={"name": "secret", "content": "x"}).json()
    ws = workspaces.get_or_create_workspace(db, f"other-{secrets.token_hex(4)}")
    other = ApiClient(server.url, workspaces.create_key(db, ws.id))
    assert other.get(f"/api/v1/documents/{doc['document_id']}").status_code == 404
    assert other.get("/api/v1/documents").json()["items"] == []
    eid = client.post("/api/v1/tasks", json={"task": "hi"}).json()["execution_id"]
    assert other.get(f"/api/v1/executions/{eid}/certificates").status_code == 404
    assert other.post(f"/api/v1/executions/{eid}/cancel").status_code == 404
    assert client.get("/api/v1/documents/doc_nope").json()["detail"]["code"] == "document_not_found"


def test_keys_and_openapi(client):
    keys = client.get("/api/v1/compliance/keys")
    assert keys.status_code == 200 and isinstance(keys.json()["keys"], list)
    assert client.get("/api/v1/compliance/keys", headers={"Authorization": "Bearer nope"}).status_code == 401
    spec = client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/documents", "/api/v1/documents/{document_id}", "/api/v1/compliance/keys",
                 "/api/v1/executions/{execution_id}/cancel", "/api/v1/executions/{execution_id}/certificates"):
        assert path in spec["paths"], path
    assert {"DocumentCreateRequest", "CertificateList", "KeySet"} <= set(spec["components"]["schemas"])
