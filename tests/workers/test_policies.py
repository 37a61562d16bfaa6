"""Every policy rule end to end, an allowed and a refused case each: the scripted model makes the
call, Guard.verify decides, and the run shows the decision (certificate or tool.blocked), the
tool's effect (or its absence) and the terminal state (halting rules end it `blocked`)."""

from __future__ import annotations

import pytest

from tests.workers.conftest import add_doc, assert_gapless, events, model_name, submit, wait_terminal

SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"
PRIVILEGED = ("Attorney-client privileged. Our litigation strategy is to settle the Henderson matter before "
              "discovery closes in March and to keep the expert report out of the record.")

# (id, policy, permissions, documents {name: (content, labels)}, the call, allowed?, rule, halts?)
CASES = [
    ("default-secret-ok", "default", ["email:send"], {},
     ("send_email", {"to": "a@example.com", "subject": "Hi", "body": "Status is green."}), True, None, False),
    ("default-secret-refused", "default", ["email:send"], {},
     ("send_email", {"to": "a@example.com", "subject": "key", "body": f"use {SECRET}"}), False,
     "secret_in_outbound", True),
    ("permission-refused", "hipaa", None, {}, ("send_email", {"to": "a@example.com", "subject": "s", "body": "b"}),
     False, "permission_denied", False),
    ("hipaa-phi-ok-redacted", "hipaa", ["fs:write"], {},
     ("write_document", {"name": "out", "content": "Patient [REDACTED:NAME] doing well."}), True, None, False),
    ("hipaa-phi-ok-phi-labelled", "hipaa", ["fs:write"], {},
     ("write_document", {"name": "chart", "content": "SSN 123-45-6789", "labels": ["phi"]}), True, None, False),
    ("hipaa-phi-refused", "hipaa", ["email:send"], {},
     ("send_email", {"to": "dr@example.com", "subject": "Update", "body": "Patient SSN 123-45-6789, MRN: 88812345"}),
     False, "phi_unredacted", False),
    ("sox-justified-ok", "sox", None, {},
     ("write_document", {"name": "q3-note", "content": "Q3 closed.", "justification": "Quarter close memo"}),
     True, None, False),
    ("sox-justification-refused", "sox", None, {}, ("write_document", {"name": "q3-note", "content": "Q3 closed."}),
     False, "missing_justification", False),
    ("sox-financial-refused", "sox", None, {"ledger-2024": ("Revenue 10M", ["financial"])},
     ("write_document", {"name": "ledger-2024", "content": "Revenue 12M", "justification": "fix"}), False,
     "financial_record_immutable", True),
    ("legal-egress-ok", "legal", ["email:send"], {"brief": (PRIVILEGED, ["privileged"])},
     ("send_email", {"to": "c@example.com", "subject": "Hello", "body": "The meeting is on Tuesday."}),
     True, None, False),
    ("legal-egress-refused", "legal", ["email:send"], {"brief": (PRIVILEGED, ["privileged"])},
     ("send_email", {"to": "c@example.com", "subject": "FYI",
                     "body": "our litigation strategy is to settle the Henderson matter before discovery closes"}),
     False, "privileged_content_egress", True),
    ("legal-unlabelled-ok", "legal", None, {"brief": (PRIVILEGED, ["privileged"])},
     ("write_document", {"name": "copy", "content": PRIVILEGED, "labels": ["privileged"]}), True, None, False),
    ("legal-unlabelled-refused", "legal", None, {"brief": (PRIVILEGED, ["privileged"])},
     ("write_document", {"name": "copy", "content": PRIVILEGED}), False, "privileged_content_unlabelled", False),
]


@pytest.mark.parametrize(("policy", "permissions", "docs", "call", "allowed", "rule", "halts"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_rule(stack, client, fake_llm, db, policy, permissions, docs, call, allowed, rule, halts):
    for name, (content, labels) in docs.items():
        add_doc(client, name, content, labels)
    model = fake_llm.script(model_name(), [{"calls": [call]}, {"text": "finished"}])
    body = {"task": "Do the thing", "compliance_policy": policy, "provider": "openai", "model": model}
    if permissions is not None:
        body["permissions"] = permissions
    eid = submit(client, **body)
    e = wait_terminal(client, eid)
    evs = events(client, eid)
    assert_gapless(evs)
    decision = next(x["data"] for x in evs if x["type"] == "guard.decision")
    assert decision["allowed"] is allowed
    certs = client.get(f"/api/v1/executions/{eid}/certificates").json()
    if allowed:
        assert e["status"] == "succeeded" and e["counts"]["certificates"] == 1 and e["counts"]["blocked"] == 0
        assert certs["items"][0]["tool"] == call[0] and certs["violations"] == []
        assert any(x["type"] == "tool.completed" and x["data"]["ok"] for x in evs)
    else:
        assert rule in {v["rule"] for v in decision["violations"]}
        blocked = next(x["data"] for x in evs if x["type"] == "tool.blocked")
        assert blocked["halt"] is halts
        assert certs["items"] == [] and certs["violations"][0]["tool"] == call[0]
        assert not any(x["type"] == "tool.completed" for x in evs)  # the tool never ran
        if halts:
            assert e["status"] == "blocked" and e["error"]["code"] == "policy_violation"
            assert e["result"] == {"output": None, "reason": "policy_violation"}
            assert len(fake_llm.requests[model]) == 1
        else:  # returned to the model as a tool error; the run goes on
            assert e["status"] == "succeeded" and e["counts"]["blocked"] == 1
            tool_msg = [m for m in fake_llm.requests[model][1]["body"]["messages"] if m["role"] == "tool"][0]
            assert "blocked_by_policy" in tool_msg["content"] and rule in tool_msg["content"]
    if call[0] == "send_email":
        n = db.fetchone("SELECT count(*) AS n FROM email_outbox WHERE execution_id = %s", (eid,))["n"]
        assert n == (1 if allowed else 0)


def test_labels_changed_during_a_slow_model_call_are_the_ones_judged(stack, client, fake_llm):
    """The run's start reads the workspace's documents; a first tool call judged more than
    DOCUMENTS_FRESH_S later is judged on the documents as they are then."""
    from workers.executor import DOCUMENTS_FRESH_S

    add_doc(client, "brief", PRIVILEGED, [])  # not yet labelled privileged when the run starts
    model = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "c@example.com", "subject": "FYI",
                                   "body": "our litigation strategy is to settle the Henderson matter"})],
         "delay_first": DOCUMENTS_FRESH_S + 0.6},
        {"text": "finished"},
    ])
    eid = submit(client, task="Do the thing", compliance_policy="legal", provider="openai", model=model,
                 permissions=["email:send"])
    from tests.support import wait_for

    wait_for(lambda: len(fake_llm.requests[model]) >= 1, timeout=10)  # the model is thinking
    add_doc(client, "brief", PRIVILEGED, ["privileged"])
    e = wait_terminal(client, eid)
    decision = next(x["data"] for x in events(client, eid) if x["type"] == "guard.decision")
    assert not decision["allowed"]
    assert "privileged_content_egress" in {v["rule"] for v in decision["violations"]}
    assert e["status"] == "blocked"
