"""Reading executions: paging, filters, the error envelope on every path, health, docs, metrics."""

from __future__ import annotations

import pytest

from tests.support import ApiClient


def test_cursor_paging_covers_every_row_once(client: ApiClient) -> None:
    created = [client.post("/api/v1/tasks", {"task": f"t{i}"}).json()["execution_id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        q = "/api/v1/executions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(q).json()
        assert page["total_count"] == 7
        seen += [e["execution_id"] for e in page["items"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(created))  # newest first, no gap, no duplicate


def test_status_filter(client: ApiClient, db) -> None:  # type: ignore[no-untyped-def]
    ids = [client.post("/api/v1/tasks", {"task": f"s{i}"}).json()["execution_id"] for i in range(3)]
    db.execute("UPDATE executions SET status = 'cancelled' WHERE id = %s", (ids[0],))
    page = client.get("/api/v1/executions?status=cancelled").json()
    assert [e["execution_id"] for e in page["items"]] == [ids[0]]
    assert page["total_count"] == 1


@pytest.mark.parametrize("query", ["limit=101", "limit=0", "limit=abc", "status=done", "cursor=%%%"])
def test_bad_list_parameters_are_400(client: ApiClient, query: str) -> None:
    r = client.get(f"/api/v1/executions?{query}")
    assert r.status_code == 400
    assert "message" in r.json()["detail"]


def test_default_and_max_limit(client: ApiClient) -> None:
    for i in range(22):
        client.post("/api/v1/tasks", {"task": f"d{i}"})
    assert len(client.get("/api/v1/executions").json()["items"]) == 20
    assert len(client.get("/api/v1/executions?limit=100").json()["items"]) == 22


def test_events_paging(stack, client: ApiClient) -> None:  # type: ignore[no-untyped-def]
    from tests.workers.conftest import wait_terminal

    loc = client.post("/api/v1/tasks", {"task": "List my documents and summarize them", "provider": "local"}
                      ).headers["Location"]
    wait_terminal(client, loc.rsplit("/", 1)[-1])
    everything = client.get(loc + "/events?limit=1000").json()
    seqs = [e["seq"] for e in everything["items"]]
    assert len(seqs) >= 4 and seqs == list(range(1, len(seqs) + 1)) and everything["has_more"] is False
    # limit and after are honoured exactly, and next_after walks every event once
    walked, after = [], 0
    while True:
        page = client.get(loc + f"/events?after={after}&limit=2").json()
        assert [e["seq"] for e in page["items"]] == seqs[after:after + 2]
        walked += [e["seq"] for e in page["items"]]
        if not page["has_more"]:
            assert page["next_after"] is None
            break
        after = page["next_after"]
        assert after == walked[-1]
    assert walked == seqs
    tail = client.get(loc + f"/events?after={seqs[-1]}").json()
    assert (tail["items"], tail["has_more"], tail["next_after"]) == ([], False, None)
    assert [e["seq"] for e in client.get(loc + "/events?after=1&limit=1").json()["items"]] == [2]
    for bad in ("after=-1", "limit=0", "limit=1001", "after=x"):
        assert client.get(loc + f"/events?{bad}").status_code == 400, bad


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404), ("DELETE", "/api/v1/tasks", 405), ("GET", "/api/v1/executions/exec_x", 404),
    ("PUT", "/healthz", 405),
])
def test_errors_are_json_envelopes(client: ApiClient, method: str, path: str, status: int) -> None:
    r = client.request(method, path)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail["message"], str) and isinstance(detail["code"], str)


def test_health_ready_metrics_docs(client: ApiClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": True, "redis": True}
    client.post("/api/v1/tasks", {"task": "metric me"})
    text = client.get("/metrics").text
    assert 'warden_http_requests_total{method="POST",route="/api/v1/tasks",status="201"}' in text
    assert "warden_http_request_duration_seconds_bucket" in text
    assert 'warden_executions{status="queued"}' in text
    assert "warden_outbox_backlog" in text
    assert 'warden_queue_depth{queue="executions"}' in text
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/tasks" in spec["paths"] and "AgentTaskRequest" in spec["components"]["schemas"]
    assert "swagger" in client.get("/api/v1/docs").text.lower()


def test_readyz_is_503_when_a_dependency_is_down(settings) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from tests.support import LiveServer

    broken = create_app(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    srv = LiveServer(broken)
    srv.start()
    try:
        r = ApiClient(srv.url, None).get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"] == {"postgres": True, "redis": False}
    finally:
        srv.stop()


def test_rate_limit_is_429_with_headers(settings, db, workspace) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from tests.support import LiveServer

    srv = LiveServer(create_app(settings.with_overrides(rate_limit_per_s=1.0, rate_limit_burst=3)))
    srv.start()
    try:
        c = ApiClient(srv.url, workspace[1])
        codes = [c.get("/api/v1/executions") for _ in range(5)]
        assert [r.status_code for r in codes[:3]] == [200, 200, 200]
        limited = codes[-1]
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["RateLimit-Limit"] == "3"
        assert limited.json()["detail"]["code"] == "rate_limited"
    finally:
        srv.stop()
