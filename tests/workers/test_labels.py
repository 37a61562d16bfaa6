"""PHI and privileged content never leak sideways, and labels follow the data.

Under hipaa every stored or streamed event, the webhook body and the workflow view show the
run's words redacted (the record keeps its output). Output derived from phi, privileged or
financial content carries those labels into the next workflow stage, where the Guard judges it
as the labelled document, and onto every document written from it."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.receiver import Receiver
from tests.support import wait_for
from tests.workers.conftest import add_doc, events, model_name, submit, wait_terminal

NOTE = "Patient: Jane Doe. MRN: 483920. DOB 03/14/1961. Discharged in stable condition."
CLEAR = ("Jane Doe", "483920", "03/14/1961", "dr.smith@example.com")


def _clear_in(value: Any) -> list[str]:
    text = json.dumps(value)
    return [s for s in CLEAR if s in text]


def test_under_hipaa_no_event_or_webhook_shows_phi(stack: Any, client: Any) -> None:
    add_doc(client, "discharge-note", NOTE, ["phi"])
    rec = Receiver()
    try:
        eid = submit(client, task="Email the discharge note to dr.smith@example.com. Include the note.",
                     compliance_policy="hipaa", permissions=["fs:read", "email:send", "pii:redact"],
                     webhook_url=rec.url + "/hook")
        e = wait_terminal(client, eid)
        evs = events(client, eid)
        completed = [x["data"] for x in evs if x["type"] == "tool.completed" and x["data"]["tool"] == "send_email"]
        assert completed and completed[-1]["ok"], [x["type"] for x in evs]
        assert completed[-1]["result"]["to"] == "[REDACTED:EMAIL]"  # the recipient, as tool.requested shows it
        assert _clear_in(evs) == [], [x for x in evs if _clear_in(x)]
        assert e["labels"] == ["phi"]  # it read a phi document
        terminal = evs[-1]
        assert terminal["type"] == "execution.succeeded" and terminal["data"]["result"]["labels"] == ["phi"]
        wait_for(lambda: rec.requests, timeout=15)
        body = json.loads(rec.requests[-1]["body"])
        assert body["execution_id"] == eid and body["labels"] == ["phi"]
        assert _clear_in(body) == [] and body["created_at"] == e["created_at"]  # timestamps are not "dates"
    finally:
        rec.stop()


README_WORKFLOW = {"name": "weekly", "budget_cents": 5000, "stages": [
    {"name": "notes", "task": "List my documents and summarize them", "compliance_policy": "hipaa",
     "budget_cents": 1500},
    {"name": "billing", "task": "Summarize the invoices", "compliance_policy": "sox", "budget_cents": 1000},
    {"name": "report", "depends_on": ["notes", "billing"], "budget_cents": 2000,
     "task": "Write one report from: {{stages.notes.output}} and {{stages.billing.output}}"}]}


def _finished(client: Any, workflow_id: str) -> dict[str, Any]:
    return wait_for(lambda: (w := client.get(f"/api/v1/workflows/{workflow_id}").json())["status"] != "running"
                    and w, timeout=30)


def test_the_readme_workflow_lands_no_phi_in_an_unlabelled_document(stack: Any, client: Any) -> None:
    add_doc(client, "discharge-note", NOTE, ["phi"])
    r = client.post("/api/v1/workflows", json=README_WORKFLOW)
    assert r.status_code == 201, r.text
    wf = _finished(client, r.json()["workflow_id"])
    stages = {s["name"]: s for s in wf["stages"]}
    assert wf["status"] == "succeeded", wf
    notes = client.get(f"/api/v1/executions/{stages['notes']['execution_id']}").json()
    assert "483920" in notes["result"]["output"] and notes["labels"] == ["phi"]  # the record keeps its output
    assert stages["notes"]["labels"] == ["phi"] and _clear_in(stages["notes"]) == []  # the view is redacted
    assert "phi" in stages["report"]["labels"] and _clear_in(wf) == []
    docs = client.get("/api/v1/documents?limit=100").json()["items"]
    written = [d for d in docs if d["name"] != "discharge-note"]
    assert written, docs
    for d in written:
        full = client.get(f"/api/v1/documents/{d['document_id']}").json()
        if any(s in full["content"] for s in CLEAR):
            assert "phi" in full["labels"], full
    assert any("phi" in d["labels"] for d in written)


def test_a_label_survives_two_hops(stack: Any, client: Any, db: Any) -> None:
    add_doc(client, "discharge-note", NOTE, ["phi"])
    body = {"stages": [
        {"name": "a", "task": "Summarize the discharge note", "compliance_policy": "hipaa",
         "permissions": ["fs:read"]},
        # b cannot read documents: whatever it carries came from a's output in its task.
        {"name": "b", "depends_on": ["a"], "task": "Restate this: {{stages.a.output}}", "permissions": ["pii:redact"]},
        {"name": "c", "depends_on": ["b"], "task": "Save as 'final-report': {{stages.b.output}}",
         "permissions": ["fs:write"]}]}
    r = client.post("/api/v1/workflows", json=body)
    assert r.status_code == 201, r.text
    wf = _finished(client, r.json()["workflow_id"])
    assert wf["status"] == "succeeded", wf
    stages = {s["name"]: s for s in wf["stages"]}
    assert [stages[n]["labels"] for n in "abc"] == [["phi"], ["phi"], ["phi"]]
    c = client.get(f"/api/v1/executions/{stages['c']['execution_id']}").json()
    assert c["labels"] == ["phi"]
    c_events = events(client, c["execution_id"])
    done = next(x["data"] for x in c_events if x["type"] == "tool.completed")
    assert done["tool"] == "write_document" and done["result"]["labels"] == ["phi"]
    cert = next(x["data"]["certificate"] for x in c_events if x["type"] == "certificate.issued")
    docs = {d["name"]: d for d in client.get("/api/v1/documents?limit=100").json()["items"]}
    full = client.get(f"/api/v1/documents/{docs['final-report']['document_id']}").json()
    from guard import arguments_sha256  # the certificate covers the call as written, labels included

    task = client.get(f"/api/v1/executions/{c['execution_id']}").json()["task"]
    assert cert["arguments_sha256"] == arguments_sha256({
        "name": "final-report", "content": full["content"], "labels": ["phi"],
        "justification": f"Requested by the task: {task[:200]}"})  # what the local planner sends
    assert docs["final-report"]["labels"] == ["phi"]
    assert "483920" in full["content"]  # the data travelled, and its label with it
    started = db.fetchall("SELECT data FROM workflow_events WHERE workflow_id = %s AND type = 'stage.started'",
                          (wf["workflow_id"],))
    assert {e["data"]["stage"]: e["data"].get("labels") for e in started} == {"a": None, "b": ["phi"], "c": ["phi"]}


def test_the_guard_judges_a_carried_input_as_the_labelled_document(stack: Any, client: Any, fake_llm: Any) -> None:
    """A hipaa stage given phi output learns the record's names from it, as if it had read the note:
    a bare name (no "Patient:" cue) in an email is then refused as PHI."""
    add_doc(client, "discharge-note", NOTE, ["phi"])
    model = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "ward@example.com", "subject": "Update", "body": "Jane Doe is home."})]},
        {"text": "done"}])
    body = {"stages": [
        {"name": "a", "task": "Summarize the discharge note", "compliance_policy": "hipaa",
         "permissions": ["fs:read"]},
        {"name": "b", "depends_on": ["a"], "compliance_policy": "hipaa", "permissions": ["email:send"],
         "provider": "openai", "model": model, "task": "Tell the ward. Context: {{stages.a.output}}"}]}
    r = client.post("/api/v1/workflows", json=body)
    assert r.status_code == 201, r.text
    wf = _finished(client, r.json()["workflow_id"])
    b = {s["name"]: s for s in wf["stages"]}["b"]
    decisions = [x["data"] for x in events(client, b["execution_id"]) if x["type"] == "guard.decision"]
    assert decisions and not decisions[0]["allowed"], decisions
    assert "phi_unredacted" in {v["rule"] for v in decisions[0]["violations"]}


def test_privileged_output_stays_inside_in_the_next_stage(stack: Any, client: Any, fake_llm: Any) -> None:
    """Stage a reads a privileged brief and answers in its own words; stage b, given that answer,
    may not email it out: its Guard finds the text of a privileged document (the carried input)."""
    brief = ("Attorney-client privileged. Our litigation strategy is to settle the Henderson matter before "
             "discovery closes in March and to keep the expert report out of the record.")
    add_doc(client, "brief", brief, ["privileged"])
    gist = "The plan is to resolve the dispute with the supplier quietly before the spring hearing date"
    reader = fake_llm.script(model_name(), [{"calls": [("read_document", {"document_id": "brief"})]},
                                            {"text": gist}])
    mailer = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "press@example.com", "subject": "Update", "body": gist})]},
        {"text": "done"}])
    body = {"stages": [
        {"name": "a", "task": "Read the brief", "compliance_policy": "legal", "provider": "openai", "model": reader},
        {"name": "b", "depends_on": ["a"], "compliance_policy": "legal", "permissions": ["email:send"],
         "provider": "openai", "model": mailer, "task": "Tell the press: {{stages.a.output}}"}]}
    r = client.post("/api/v1/workflows", json=body)
    assert r.status_code == 201, r.text
    wf = _finished(client, r.json()["workflow_id"])
    stages = {s["name"]: s for s in wf["stages"]}
    assert stages["a"]["labels"] == ["privileged"] and stages["b"]["labels"] == ["privileged"]
    blocked = [x["data"] for x in events(client, stages["b"]["execution_id"]) if x["type"] == "tool.blocked"]
    assert blocked and "privileged_content_egress" in {v["rule"] for v in blocked[0]["violations"]}, blocked
    assert stages["b"]["status"] == "blocked"  # a halting rule under legal_privilege


def test_a_webhook_never_carries_privileged_words_out(stack: Any, client: Any) -> None:
    brief = ("Attorney-client privileged. Our litigation strategy is to settle the Henderson matter before "
             "discovery closes in March and to keep the expert report out of the record.")
    add_doc(client, "brief", brief, ["privileged"])
    rec = Receiver()
    try:
        eid = submit(client, task="Summarize the brief", compliance_policy="legal", webhook_url=rec.url + "/hook")
        e = wait_terminal(client, eid)
        assert e["labels"] == ["privileged"] and "Henderson" in e["result"]["output"]  # the record keeps it
        wait_for(lambda: rec.requests, timeout=15)
        body = json.loads(rec.requests[-1]["body"])
        assert body["labels"] == ["privileged"] and body["result"]["output"] == "[WITHHELD: privileged]"
        raw = rec.requests[-1]["body"]
        assert "Henderson" not in (raw.decode() if isinstance(raw, bytes) else raw)
    finally:
        rec.stop()
