"""Workflows through the real stack: DAG validation, templating, fan-in, parallel stages,
failure propagation, cancel, the workflow budget, and exactly-once stage starts under
redelivered and concurrent advance messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support import ApiClient, wait_for

DONE = {"succeeded", "failed", "cancelled"}


def stage(name: str, task: str = "List my documents and summarize them", **kw: Any) -> dict[str, Any]:
    return {"name": name, "task": task, "provider": "local", **kw}


def finished(client: ApiClient, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/api/v1/workflows/{workflow_id}").json()
        return body if body["status"] in DONE else None

    return wait_for(done, timeout=timeout, interval=0.1)


def by_name(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in wf["stages"]}


class SlowServer:
    """A loopback HTTP server whose answers take ``delay`` seconds; it counts requests in flight."""

    def __init__(self, delay: float) -> None:
        self.delay, self.in_flight, self.max_in_flight, self.lock = delay, 0, 0, threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                time.sleep(outer.delay)
                with outer.lock:
                    outer.in_flight -= 1
                body = b"slow answer"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/slow"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture()
def slow() -> Iterator[SlowServer]:
    server = SlowServer(1.5)
    yield server
    server.close()


def fetch(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return stage(name, f"Fetch {url} and summarize it", permissions=["fs:read", "network:http:read"], **kw)


# --- validation (no worker needed) ------------------------------------------------------------------

@pytest.mark.parametrize(("stages", "key", "words"), [
    ([stage("a", depends_on=["b"]), stage("b", depends_on=["a"])], "stages", ["cycle", "a -> b -> a"]),
    ([stage("a", depends_on=["b"]), stage("b", depends_on=["c"]), stage("c", depends_on=["a"])], "stages",
     ["cycle"]),
    ([stage("a", depends_on=["ghost"])], "stages.a.depends_on", ["ghost"]),
    ([stage("a", depends_on=["a"])], "stages.a.depends_on", ["itself"]),
    ([stage("a"), stage("a")], "stages", ["Duplicate", "a"]),
    ([stage("a"), stage("b", "use {{stages.a.output}}")], "stages.b.task", ["does not depend"]),
    ([stage("a", "use {{stages.zz.output}}")], "stages.a.task", ["unknown stage 'zz'"]),
    ([stage("a", "use {{stages.a.result}}")], "stages.a.task", ["Unsupported template"]),
    ([stage("a", permissions=["network:http:read"], compliance_policy="hipaa")], "stages.a.permissions",
     ["No effective permissions"]),
])
def test_plan_errors_are_422_naming_them(client: ApiClient, stages: list, key: str, words: list[str]) -> None:
    r = client.post("/api/v1/workflows", {"stages": stages})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "validation_error"
    assert key in detail["errors"], detail
    text = " ".join(detail["errors"][key])
    assert all(w in text for w in words), text


def test_request_shape_errors(client: ApiClient) -> None:
    assert client.post("/api/v1/workflows", {"stages": []}).status_code == 422
    assert client.post("/api/v1/workflows", {"stages": [stage("a")], "extra": 1}).status_code == 422
    r = client.post("/api/v1/workflows", {"stages": [{**stage("a"), "colour": "red"}]})
    assert r.status_code == 422 and "colour" in str(r.json()["detail"]["errors"])
    r = client.post("/api/v1/workflows", {"stages": [stage("a bad")]})
    assert r.status_code == 422
    r = client.post("/api/v1/workflows", {"stages": [stage("a", compliance_policy="gdpr")]})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "invalid_compliance_policy"
    assert client.post("/api/v1/workflows", [1]).status_code == 400
    assert client.get("/api/v1/workflows/wf_nope").status_code == 404
    assert client.post("/api/v1/workflows/wf_nope/cancel").status_code == 404


# --- running (real worker) --------------------------------------------------------------------------

def test_chain_with_templating_and_listing(stack, client: ApiClient) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/v1/documents", {"name": "plan", "content": "Quarterly plan. Ship the audit feature."})
    r = client.post("/api/v1/workflows", {"name": "chain", "stages": [
        stage("gather"), stage("report", "Write a report from this: {{stages.gather.output}}", depends_on=["gather"])]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "running" and body["workflow_id"].startswith("wf_")
    assert "/ws/workflows/" + body["workflow_id"] in body["websocket_url"]
    assert r.headers["Location"] == f"/api/v1/workflows/{body['workflow_id']}"
    wf = finished(client, body["workflow_id"])
    assert wf["status"] == "succeeded", wf
    s = by_name(wf)
    out = s["gather"]["output"]
    assert out and s["report"]["resolved_task"] == f"Write a report from this: {out}"
    assert s["report"]["task"] == "Write a report from this: {{stages.gather.output}}"
    ex = client.get(f"/api/v1/executions/{s['report']['execution_id']}").json()
    assert ex["task"] == s["report"]["resolved_task"] and ex["status"] == "succeeded"
    page = client.get("/api/v1/workflows?limit=1").json()
    assert page["items"][0]["workflow_id"] == body["workflow_id"] and page["total_count"] == 1
    assert client.get("/api/v1/workflows?status=succeeded").json()["total_count"] == 1
    assert client.get("/api/v1/workflows?status=nope").status_code == 400


def test_parallel_stages_overlap_and_fan_in_waits_for_all(stack, client: ApiClient, slow: SlowServer) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/workflows", {"stages": [
        fetch("left", slow.url), fetch("right", slow.url),
        stage("join", "Combine: {{stages.left.output}} / {{stages.right.output}}", depends_on=["left", "right"])]})
    assert r.status_code == 201, r.text
    wf = finished(client, r.json()["workflow_id"])
    assert wf["status"] == "succeeded", wf
    assert slow.max_in_flight >= 2  # both fetches were in flight at the same time
    s = by_name(wf)
    execs = {n: client.get(f"/api/v1/executions/{s[n]['execution_id']}").json() for n in s}
    assert execs["join"]["started_at"] >= max(execs["left"]["finished_at"], execs["right"]["finished_at"])
    assert execs["left"]["started_at"] < execs["right"]["finished_at"]
    assert execs["right"]["started_at"] < execs["left"]["finished_at"]


def test_failed_stage_cancels_dependants(stack, client: ApiClient, slow: SlowServer) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/workflows", {"stages": [
        fetch("first", slow.url), stage("second", depends_on=["first"]), stage("third", depends_on=["second"]),
        stage("independent")]})
    workflow_id = r.json()["workflow_id"]
    first = wait_for(lambda: by_name(client.get(f"/api/v1/workflows/{workflow_id}").json())["first"]["execution_id"])
    assert client.post(f"/api/v1/executions/{first}/cancel").status_code in (200, 202)
    wf = finished(client, workflow_id)
    s = by_name(wf)
    assert wf["status"] == "failed" and wf["error"]["code"] == "stage_failed"
    assert s["first"]["status"] == "cancelled"
    assert s["second"]["status"] == "cancelled" and s["second"]["execution_id"] is None
    assert s["second"]["error"]["code"] == "dependency_failed" and s["second"]["error"]["stage"] == "first"
    assert s["third"]["status"] == "cancelled" and s["third"]["error"]["stage"] == "second"
    assert s["independent"]["status"] == "succeeded"


def test_cancel_workflow(stack, client: ApiClient, slow: SlowServer) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/workflows", {"stages": [fetch("slow", slow.url), stage("after", depends_on=["slow"])]})
    workflow_id = r.json()["workflow_id"]
    wait_for(lambda: slow.in_flight >= 1)
    r = client.post(f"/api/v1/workflows/{workflow_id}/cancel")
    assert r.status_code in (200, 202), r.text
    assert r.json()["cancel_requested"] is True
    wf = finished(client, workflow_id)
    s = by_name(wf)
    assert wf["status"] == "cancelled"
    assert s["slow"]["status"] == "cancelled" and s["after"]["status"] == "cancelled"
    assert s["after"]["execution_id"] is None and s["after"]["error"]["code"] == "workflow_cancelled"
    r = client.post(f"/api/v1/workflows/{workflow_id}/cancel")
    assert r.status_code == 409 and r.json()["detail"]["code"] == "workflow_finished"


def test_workflow_budget_caps_the_stages(stack, client: ApiClient) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/workflows", {"budget_cents": 150, "stages": [
        stage("a", budget_cents=100), stage("b", budget_cents=100)]})
    wf = finished(client, r.json()["workflow_id"])
    s = by_name(wf)
    assert s["a"]["budget_cents"] == 100 and s["a"]["status"] == "succeeded"
    assert s["b"]["status"] == "cancelled" and s["b"]["error"]["code"] == "workflow_budget_exhausted"
    assert wf["status"] == "failed" and wf["spent_cents"] <= 150


def test_each_stage_runs_once_under_redelivery(stack, client: ApiClient, db, celery_app) -> None:  # type: ignore[no-untyped-def]
    from shared.store import workflows

    r = client.post("/api/v1/workflows", {"stages": [
        stage("a"), stage("b", depends_on=["a"]), stage("c", depends_on=["a"]), stage("d", depends_on=["b", "c"])]})
    workflow_id = r.json()["workflow_id"]
    stop = threading.Event()

    def hammer() -> None:  # concurrent advances in separate transactions, as several workers would run them
        while not stop.is_set():
            with db.transaction() as cur:
                workflows.advance(cur, workflow_id)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(30):  # and redelivered / duplicate messages through the broker
        celery_app.send_task("workers.workflows.advance", args=[workflow_id], queue="executions")
    try:
        wf = finished(client, workflow_id)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert wf["status"] == "succeeded", wf
    rows = db.fetchall("SELECT workflow_stage, count(*) AS n FROM executions WHERE workflow_id = %s"
                       " GROUP BY workflow_stage ORDER BY workflow_stage", (workflow_id,))
    assert [(r["workflow_stage"], r["n"]) for r in rows] == [("a", 1), ("b", 1), ("c", 1), ("d", 1)]
    events = db.fetchall("SELECT type, data FROM workflow_events WHERE workflow_id = %s ORDER BY seq", (workflow_id,))
    assert [e["data"]["stage"] for e in events if e["type"] == "stage.started"] in (
        ["a", "b", "c", "d"], ["a", "c", "b", "d"])
    assert [e["type"] for e in events][-1] == "workflow.succeeded"


def test_other_workspace_sees_nothing(stack, client: ApiClient, server, db) -> None:  # type: ignore[no-untyped-def]
    from shared.store import workspaces

    workflow_id = client.post("/api/v1/workflows", {"stages": [stage("a")]}).json()["workflow_id"]
    ws = workspaces.get_or_create_workspace(db, "wf-other")
    other = ApiClient(server.url, workspaces.create_key(db, ws.id))
    assert other.get(f"/api/v1/workflows/{workflow_id}").status_code == 404
    assert other.post(f"/api/v1/workflows/{workflow_id}/cancel").status_code == 404
    assert workflow_id not in str(other.get("/api/v1/workflows").json())


def test_idempotency_key_creates_one_workflow(client: ApiClient) -> None:
    import concurrent.futures

    body = {"name": "idem", "stages": [stage("a"), stage("b", depends_on=["a"])]}

    def post(_: int) -> tuple[int, dict[str, Any], str]:
        r = ApiClient(client.base_url, client.key).post("/api/v1/workflows", body,
                                                        headers={"Idempotency-Key": "wf-1"})
        return r.status_code, r.json(), r.headers.get("Location", "")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(post, range(6)))
    assert {s for s, _, _ in results} == {201}
    assert len({json_key(b) for _, b, _ in results}) == 1 and len({loc for _, _, loc in results}) == 1
    listed = client.get("/api/v1/workflows").json()
    assert listed["total_count"] == 1
    reused = client.post("/api/v1/workflows", {**body, "name": "other"}, headers={"Idempotency-Key": "wf-1"})
    assert reused.status_code == 422 and reused.json()["detail"]["code"] == "idempotency_key_reused"
    bad = client.post("/api/v1/workflows", body, headers={"Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and bad.json()["detail"]["code"] == "invalid_idempotency_key"
    assert client.get("/api/v1/workflows").json()["total_count"] == 1


def json_key(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body, sort_keys=True)
