"""Each vendor through its official SDK against the local wire-format double: a multi-step tool
run, transient errors retried, terminal errors ending the run `error`."""

from __future__ import annotations

import json

import pytest

from tests.workers.conftest import add_doc, assert_gapless, events, model_name, submit, wait_terminal


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_multi_step_tool_run(stack, client, fake_llm, provider):
    doc_id = add_doc(client, "meeting-notes", "The launch moved to Friday. Budget approved.")
    model = fake_llm.script(model_name(), [
        {"calls": [("list_documents", {})], "usage": (300, 20)},
        {"calls": [("read_document", {"document_id": doc_id}), ("redact_text", {"text": "Call 555-123-4567"})]},
        {"text": "The launch moved to Friday.", "usage": (500, 30)},
    ])
    eid = submit(client, task="Summarize the meeting notes", provider=provider, model=model)
    e = wait_terminal(client, eid)
    assert e["status"] == "succeeded", e
    assert e["result"] == {"output": "The launch moved to Friday."}
    assert e["provider"] == provider and e["model"] == model
    assert e["counts"]["tool_calls"] == 3 and e["counts"]["certificates"] == 3 and e["counts"]["blocked"] == 0
    assert e["usage"]["llm_calls"] == 3 and e["usage"]["input_tokens"] == 300 + 100 + 500
    assert e["spent_cents"] > 0

    evs = events(client, eid)
    assert_gapless(evs)
    types = [x["type"] for x in evs]
    assert types[:3] == ["execution.queued", "execution.started", "llm.completed"]
    assert types.count("certificate.issued") == 3 and types[-1] == "execution.succeeded"
    llm = [x["data"] for x in evs if x["type"] == "llm.completed"]
    assert llm[-1]["spent_cents"] == pytest.approx(e["spent_cents"])

    reqs = fake_llm.requests[model]
    assert len(reqs) == 3
    last = reqs[-1]["body"]
    tool_names = {t["function"]["name"] if provider == "openai" else t["name"] for t in last["tools"]}
    assert "read_document" in tool_names and "http_get" not in tool_names  # only granted tools are offered
    if provider == "openai":
        assert reqs[0]["headers"]["authorization"] == "Bearer sk-test-not-real"
        tool_msgs = [m for m in last["messages"] if m["role"] == "tool"]
        assert json.loads(tool_msgs[1]["content"])["content"].startswith("The launch")
        assert json.loads(tool_msgs[2]["content"])["text"] == "Call [REDACTED:PHONE]"
    else:
        h = reqs[0]["headers"]
        assert "sk-ant-test-not-real" in (h.get("x-api-key", ""), h.get("authorization", "").removeprefix("Bearer "))
        assert "anthropic-version" in h
        results = [b for m in last["messages"] if m["role"] == "user" and isinstance(m["content"], list)
                   for b in m["content"] if b["type"] == "tool_result"]
        assert [b["tool_use_id"] for b in results] == ["toolu_0_0", "toolu_1_0", "toolu_1_1"]
        assert json.loads(results[1]["content"])["name"] == "meeting-notes"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_transient_errors_are_retried(stack, client, fake_llm, provider):
    model = fake_llm.script(model_name(), [{"text": "done", "fail": [(503, 1), (429, 1)]}])
    e = wait_terminal(client, submit(client, task="Say done", provider=provider, model=model))
    assert e["status"] == "succeeded" and e["result"]["output"] == "done"
    assert len(fake_llm.requests[model]) == 3


@pytest.mark.parametrize(("status", "code"), [(401, "provider_auth_failed"), (400, "provider_bad_request")])
def test_terminal_provider_error(stack, client, fake_llm, status, code):
    model = fake_llm.script(model_name(), [{"text": "never", "fail": [(status, 99)]}])
    e = wait_terminal(client, submit(client, task="Say done", provider="openai", model=model))
    assert e["status"] == "error"
    assert e["error"]["code"] == code and str(status) in e["error"]["message"]
    assert len(fake_llm.requests[model]) == 1  # not retried
    assert events(client, e["execution_id"])[-1]["type"] == "execution.error"


@pytest.mark.parametrize(("provider", "raw", "said"), [
    ("openai", b"<html>upstream proxy error</html>", "other than JSON"),
    ("openai", b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}', "no choices"),
    ("anthropic", b"<html>upstream proxy error</html>", "other than JSON"),
    ("anthropic", b'{"id": "msg_1", "type": "message", "content": [{"type": "tool_use", "input": {}}]}',
     "without an id"),
])
def test_an_answer_that_is_not_the_wire_format_ends_the_run(stack, client, fake_llm, provider, raw, said):
    """A 200 whose body is not a chat completion or a message (a proxy's page, a tool call
    without a name): the run ends error with provider_bad_response, saying what came back, and the
    call is not retried."""
    model = fake_llm.script(model_name(), [{"raw": raw}])
    e = wait_terminal(client, submit(client, task="Say done", provider=provider, model=model))
    assert e["status"] == "error" and e["error"]["code"] == "provider_bad_response", e
    assert said in e["error"]["message"]
    assert len(fake_llm.requests[model]) == 1
    assert events(client, e["execution_id"])[-1]["type"] == "execution.error"


def test_unknown_model_is_a_terminal_error(stack, client, fake_llm):
    e = wait_terminal(client, submit(client, task="Say done", provider="anthropic", model="no-such-model"))
    assert e["status"] == "error" and e["error"]["code"] == "provider_model_not_found"


def test_local_planner_hipaa_run(stack, client):
    add_doc(client, "discharge-note", "Patient: Jane Doe. MRN: 12345678. Discharged 03/04/2024 in good condition. "
                                      "Follow up with cardiology.", ["phi"])
    eid = submit(client, task="Summarize the discharge note and save it as 'discharge-summary'",
                 compliance_policy="hipaa")
    e = wait_terminal(client, eid)
    assert e["status"] == "succeeded" and e["provider"] == "local"
    assert "not an LLM" in e["result"]["output"] and "Jane Doe" not in e["result"]["output"]
    evs = events(client, eid)
    blocked = [x["data"] for x in evs if x["type"] == "tool.blocked"]
    assert [v["rule"] for v in blocked[0]["violations"]] == ["phi_unredacted"]
    tools = [x["data"]["tool"] for x in evs if x["type"] == "certificate.issued"]
    assert tools == ["list_documents", "read_document", "redact_text", "write_document"]
    # The blocked write and redact_text's input carried the record; their events show it redacted.
    requested = [x["data"] for x in evs if x["type"] == "tool.requested"]
    assert "[REDACTED:NAME]" in requested[-1]["arguments"]["content"]
    assert not any(s in json.dumps(evs) for s in ("Jane Doe", "12345678", "03/04/2024"))
    doc = client.get("/api/v1/documents?limit=100").json()["items"]
    summary = next(d for d in doc if d["name"] == "discharge-summary")
    text = client.get(f"/api/v1/documents/{summary['document_id']}").json()["content"]
    assert "[REDACTED:NAME]" in text and "Jane Doe" not in text


def test_local_planner_emails_under_hipaa_without_a_document(stack, client, db):
    """Nothing uploaded yet: the planner mails the task's own text. Its recipient address is an
    identifier under hipaa, so the first send is refused, and the redacted body goes out; the
    subject never carries the address."""
    eid = submit(client, task="Email the discharge note to dr.smith@example.com.", compliance_policy="hipaa",
                 permissions=["fs:read", "email:send", "pii:redact"])
    e = wait_terminal(client, eid)
    assert e["status"] == "succeeded"
    blocked = [x["data"] for x in events(client, eid) if x["type"] == "tool.blocked"]
    assert [[v["rule"] for v in b["violations"]] for b in blocked] == [["phi_unredacted"]]
    mail = db.fetchone("SELECT recipient, subject, body FROM email_outbox WHERE execution_id = %s", (eid,))
    assert mail["recipient"] == "dr.smith@example.com"
    assert "dr.smith@example.com" not in mail["subject"] + mail["body"]


def test_argument_previews_are_redacted_whole_before_the_cut():
    """The preview of a long argument under hipaa: every identifier redacted, wherever it sits,
    then shortened; the default policy shows the text as written."""
    from guard import load_policy
    from workers.steps import _ARG_PREVIEW, _preview

    body = "Follow-up note. " + " ".join(f"Contact jane{i}@example.org, MRN: {480000 + i}." for i in range(60))
    shown = _preview({"to": "dr@example.org", "body": body, "n": 3}, load_policy("hipaa"), ("Jane Doe",))
    assert shown["n"] == 3 and shown["body"].endswith("…") and len(shown["body"]) == _ARG_PREVIEW + 1
    assert "@" not in shown["body"] and "4800" not in shown["body"] and "@" not in shown["to"]
    plain = _preview({"body": body}, load_policy("default"), ())
    assert plain["body"] == body[:_ARG_PREVIEW] + "…"


@pytest.mark.parametrize(("provider", "status"), [("openai", 429), ("anthropic", 529)])
def test_rate_limit_waits_for_retry_after_and_says_so(stack, client, fake_llm, provider, status):
    """A 429 (or Anthropic's 529, overloaded) with retry-after: the run waits that long (no
    retry before it), says so in an llm.retrying event per wait, then goes on."""
    model = fake_llm.script(model_name(), [{"text": "done", "fail": [(status, 2)], "retry_after": 1}])
    e = wait_terminal(client, submit(client, task="Say done", provider=provider, model=model))
    assert e["status"] == "succeeded" and e["result"]["output"] == "done", e
    evs = events(client, e["execution_id"])
    assert_gapless(evs)
    waits = [x for x in evs if x["type"] == "llm.retrying"]
    assert [(w["data"]["attempt"], w["data"]["delay_s"]) for w in waits] == [(1, 1.0), (2, 1.0)]
    assert {w["data"]["code"] for w in waits} == {"provider_rate_limited" if status == 429 else "provider_unavailable"}
    # The tries were a second apart at least: the provider's retry-after was honoured.
    at = [x["at"] for x in evs if x["type"] in ("llm.retrying", "llm.completed")]
    from datetime import datetime

    stamps = [datetime.fromisoformat(t) for t in at]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(g >= 0.95 for g in gaps), gaps
    assert len(fake_llm.requests[model]) == 3


def test_provider_unavailable_past_the_time_limit_ends_with_its_code(stack, client, fake_llm, settings, db):
    """Still rate limited when the next try would come after the run's time limit: the run ends
    error with the provider's code, saying why, instead of waiting past its limit."""
    model = fake_llm.script(model_name(), [{"text": "never", "fail": [(429, 99)], "retry_after": 100000}])
    e = wait_terminal(client, submit(client, task="Say done", provider="openai", model=model))
    assert e["status"] == "error" and e["error"]["code"] == "provider_rate_limited", e
    assert "time limit" in e["error"]["message"]
    assert len(fake_llm.requests[model]) == 1
