"""What a new user meets first: errors that name what is wrong, a provider the server cannot use
refused at submission, and docs that work offline with / and /api/v1/docs/ answering."""

from __future__ import annotations

import re
from typing import Any


def test_an_unknown_field_is_named(client: Any) -> None:
    r = client.post("/api/v1/tasks", json={"taks": "Summarize the note", "compliance_policy": "hipaa"})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_request_shape"
    assert "'taks' (did you mean 'task'?)" in detail["message"]
    assert detail["unknown_fields"] == ["taks"] and detail["errors"] == {"taks": ["Unknown field."]}
    # Known fields of either kind are not called unknown.
    r = client.post("/api/v1/tasks", json={"compliance_policy": "hipaa", "entity_scope": "AAPL"})
    assert r.status_code == 400 and "unknown" not in r.json()["detail"]["message"]
    assert "unknown_fields" not in r.json()["detail"]


def test_a_provider_without_a_key_is_refused_at_submission(client: Any, monkeypatch: Any, db: Any) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    before = db.fetchone("SELECT count(*) AS n FROM executions")["n"]
    for provider, variable in (("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")):
        r = client.post("/api/v1/tasks", json={"task": "Say hi", "provider": provider})
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert detail["code"] == "provider_not_configured" and detail["provider"] == provider
        assert f"'{provider}'" in detail["message"] and variable in detail["message"]
    r = client.post("/api/v1/workflows", json={"stages": [{"name": "a", "task": "Say hi", "provider": "openai"}]})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "provider_not_configured"
    assert r.json()["detail"]["stage"] == "a"
    assert db.fetchone("SELECT count(*) AS n FROM executions")["n"] == before  # nothing was created
    assert client.post("/api/v1/tasks", json={"task": "Say hi", "provider": "local"}).status_code == 201


def test_docs_are_served_from_the_package_and_the_root_answers(client: Any) -> None:
    r = client.get("/", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/api/v1/docs/")
    r = client.get("/api/v1/docs", allow_redirects=False)
    assert r.status_code in (301, 308) and r.headers["Location"].endswith("/api/v1/docs/")
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200 and "/api/v1/openapi.json" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))]  # nothing off the host
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 100, asset
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)


def test_every_list_has_total_count(client: Any) -> None:
    """Every paged list says how many there are in all: in the OpenAPI document and in answers."""
    doc = client.get("/api/v1/openapi.json").json()
    lists = {name: s for name, s in doc["components"]["schemas"].items()
             if "items" in s.get("properties", {}) and s["properties"]["items"].get("type") == "array"}
    assert {"ExecutionList", "DocumentList", "EventList", "CertificateList", "AlertList", "WorkflowList"} <= set(lists)
    assert [n for n, s in lists.items() if "total_count" not in s["properties"]] == []
    client.post("/api/v1/documents", json={"name": "a", "content": "x"})
    client.post("/api/v1/documents", json={"name": "b", "content": "y"})
    page = client.get("/api/v1/documents?limit=1").json()
    assert page["total_count"] == 2 and len(page["items"]) == 1 and page["has_more"]
    eid = client.post("/api/v1/tasks", json={"task": "Say hi"}).json()["execution_id"]
    events = client.get(f"/api/v1/executions/{eid}/events").json()
    assert events["total_count"] >= 1 == events["items"][0]["seq"]
    certificates = client.get(f"/api/v1/executions/{eid}/certificates").json()
    assert certificates["total_count"] == len(certificates["items"])  # not paged: all of them
