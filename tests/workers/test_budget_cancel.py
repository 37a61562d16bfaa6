"""Budget (reserve before each call, charge after, refuse the call that would pass the budget),
cancel in each state, the step bound, and the http tools against a local server."""

from __future__ import annotations

import time

import pytest

from tests.fakes.receiver import Receiver
from tests.support import TaskRuns, wait_for
from tests.workers.conftest import (
    assert_gapless,
    events,
    model_name,
    stop_consuming_executions,
    submit,
    wait_terminal,
)


def test_budget_exceeded_refuses_the_next_call(stack, client, fake_llm):
    # Unknown model → default price 1500 cents/Mtok; 100k input tokens cost 150 cents > 100.
    model = fake_llm.script(model_name(), [{"calls": [("list_documents", {})], "usage": (100_000, 10)},
                                           {"text": "never reached"}])
    eid = submit(client, task="List things", provider="openai", model=model, budget_cents=100)
    e = wait_terminal(client, eid)
    assert e["status"] == "blocked"
    assert e["error"]["code"] == "budget_exceeded" and e["result"]["reason"] == "budget_exceeded"
    assert e["spent_cents"] == pytest.approx(150.015)
    assert len(fake_llm.requests[model]) == 1  # no further model call was made
    evs = events(client, eid)
    assert_gapless(evs)
    assert next(x for x in evs if x["type"] == "llm.completed")["data"]["spent_cents"] == pytest.approx(150.015)
    # The first answer's tool call meets the guard's budget check (spent > budget): refused, halting.
    decision = next(x["data"] for x in evs if x["type"] == "guard.decision")
    assert {v["rule"] for v in decision["violations"]} == {"budget_exceeded"} and decision["halt"]


def test_budget_within_limit(stack, client, fake_llm):
    model = fake_llm.script(model_name(), [{"text": "ok", "usage": (1000, 100)}])
    e = wait_terminal(client, submit(client, task="x", provider="openai", model=model, budget_cents=100))
    assert e["status"] == "succeeded" and e["spent_cents"] == pytest.approx(1.65)


def test_cancel_queued(stack, client, celery_app, worker):
    # Pause the executions pool (as an operator would) so the run stays queued.
    stop_consuming_executions(celery_app, worker)
    try:
        eid = submit(client, task="Summarize everything")
        with TaskRuns("workers.executions.run", eid) as runs:
            time.sleep(0.3)
            assert client.get(f"/api/v1/executions/{eid}").json()["status"] == "queued"
            r = client.post(f"/api/v1/executions/{eid}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            celery_app.control.add_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)
            runs.wait(1, timeout=30)  # the delivered message was handled: it found the run cancelled
    finally:  # consuming again whatever happened (a second add is a no-op)
        celery_app.control.add_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)
    evs = events(client, eid)
    assert [x["type"] for x in evs] == ["execution.queued", "execution.cancelled"]
    assert client.post(f"/api/v1/executions/{eid}/cancel").status_code == 409


def test_cancel_running_stops_before_next_step(stack, client, fake_llm, db):
    model = fake_llm.script(model_name(), [{"calls": [("send_email", {"to": "a@example.com", "subject": "s",
                                                                       "body": "b"})], "delay": 1.0},
                                           {"text": "never"}])
    eid = submit(client, task="Email", provider="openai", model=model, permissions=["email:send"])
    wait_for(lambda: client.get(f"/api/v1/executions/{eid}").json()["status"] == "running", timeout=10)
    r = client.post(f"/api/v1/executions/{eid}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    e = wait_terminal(client, eid)
    assert e["status"] == "cancelled"
    evs = events(client, eid)
    assert_gapless(evs)
    assert not any(x["type"].startswith("tool.") for x in evs)
    assert db.fetchone("SELECT count(*) AS n FROM email_outbox WHERE execution_id = %s", (eid,))["n"] == 0
    assert client.post(f"/api/v1/executions/{eid}/cancel").status_code == 409


def test_cancel_unknown_and_other_workspace(stack, client, server):
    from tests.support import ApiClient

    assert client.post("/api/v1/executions/exec_nope/cancel").status_code == 404
    eid = submit(client, task="hello")
    other = ApiClient(server.url, None)
    assert other.post(f"/api/v1/executions/{eid}/cancel").status_code == 401


def test_step_bound(stack, client, fake_llm):
    model = fake_llm.script(model_name(), [{"calls": [("list_documents", {})], "usage": (1, 1)}])
    e = wait_terminal(client, submit(client, task="loop", provider="openai", model=model), timeout=30)
    assert e["status"] == "error" and e["error"]["code"] == "max_steps_exceeded"


def test_http_tools_reach_a_local_server(stack, client, fake_llm):
    rec = Receiver(body=b"hello from the server")
    try:
        model = fake_llm.script(model_name(), [
            {"calls": [("http_get", {"url": rec.url + "/page"}),
                       ("http_post", {"url": rec.url + "/in", "body": "hi"})]},
            {"text": "fetched"}])
        eid = submit(client, task="fetch", provider="openai", model=model,
                     permissions=["network:http:read", "network:http:write"])
        e = wait_terminal(client, eid)
        assert e["status"] == "succeeded" and e["counts"]["certificates"] == 2
        assert [(r["method"], r["path"], r["body"]) for r in rec.requests] == [("GET", "/page", b""),
                                                                              ("POST", "/in", b"hi")]
        tool_msgs = [m for m in fake_llm.requests[model][1]["body"]["messages"] if m["role"] == "tool"]
        assert "hello from the server" in tool_msgs[0]["content"]
    finally:
        rec.stop()


def test_ssrf_refusals():
    from shared import safehttp

    for url in ("http://127.0.0.1:9/", "http://[::ffff:127.0.0.1]/", "http://2130706433/", "http://localhost/",
                "http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "http://10.0.0.1/"):
        with pytest.raises(safehttp.UnsafeTarget):
            safehttp.request("GET", url, allow_private=False, timeout=1)


def test_budget_reservation_refuses_before_calling(stack, client, fake_llm):
    # 66k input tokens at the default price: 99.015 of 100 cents spent, so the tool call passes the
    # guard; the next call's reservation (prompt + the most it may answer) does not fit: not made.
    model = fake_llm.script(model_name(), [{"calls": [("list_documents", {})], "usage": (66_000, 10)},
                                           {"text": "never reached"}])
    eid = submit(client, task="x", provider="openai", model=model, budget_cents=100)
    e = wait_terminal(client, eid)
    assert e["status"] == "blocked" and e["error"]["code"] == "budget_exceeded"
    assert e["counts"]["certificates"] == 1 and e["spent_cents"] == pytest.approx(99.015)
    assert len(fake_llm.requests[model]) == 1
