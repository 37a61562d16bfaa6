"""Audit package through the real API after a real execution (local provider, real worker),
verified offline; 409 before it finishes; another workspace gets 404."""

from __future__ import annotations

import io
import json
import zipfile

from guard.audit import verify_package
from tests.support import ApiClient, wait_for

TERMINAL = {"succeeded", "blocked", "error", "cancelled"}


def _finished(client: ApiClient, execution_id: str) -> dict:
    def done() -> dict | None:
        body = client.get(f"/api/v1/executions/{execution_id}").json()
        return body if body["status"] in TERMINAL else None

    return wait_for(done, timeout=60)


def test_round_trip_after_a_real_execution(stack, client: ApiClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/v1/documents", {"name": "discharge-note", "content": "Patient recovered well.",
                                      "labels": ["phi"]})
    r = client.post("/api/v1/tasks", {"task": "List my documents and summarize them", "compliance_policy": "hipaa"})
    assert r.status_code == 201
    execution_id = r.json()["execution_id"]
    execution = _finished(client, execution_id)

    r = client.get(f"/api/v1/compliance/executions/{execution_id}/audit-package")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert f"audit-{execution_id}.zip" in r.headers["Content-Disposition"]
    report = verify_package(r.content)
    assert report.ok, [str(p) for p in report.problems]

    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        exported = json.loads(zf.read("execution.json"))
        events = [json.loads(line) for line in zf.read("events.jsonl").splitlines()]
        certs = [json.loads(line) for line in zf.read("certificates.jsonl").splitlines()]
        policy = json.loads(zf.read("policy.json"))
        keys = json.loads(zf.read("keys.json"))
    assert names == {"manifest.json", "execution.json", "events.jsonl", "certificates.jsonl", "violations.jsonl",
                     "policy.json", "keys.json", "checkpoint.json"}
    assert exported["execution_id"] == execution_id and exported["status"] == execution["status"]
    assert [e["seq"] for e in events] == list(range(1, execution["counts"]["events"] + 1))
    assert events[-1]["type"] == f"execution.{execution['status']}"
    api_certs = client.get(f"/api/v1/executions/{execution_id}/certificates").json()["items"]
    assert certs == api_certs and len(certs) >= 1  # list_documents at least was certified
    assert policy["name"] == "hipaa" and policy["version"] == execution["policy_version"]
    # The package's keys are the server's published keys: pinning them verifies too.
    published = client.get("/api/v1/compliance/keys").json()
    assert {k["kid"] for k in keys["keys"]} <= {k["kid"] for k in published["keys"]}
    assert verify_package(r.content, trusted_keys=published).ok

    # Tamper with the downloaded file and it no longer verifies.
    path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "events.jsonl":
                data = b"".join(data.splitlines(keepends=True)[1:])  # drop the first event
            dst.writestr(name, data)
    problems = {(p.file, p.code) for p in verify_package(path).problems}
    assert ("events.jsonl", "seq_mismatch") in problems and ("events.jsonl", "checkpoint_hash_mismatch") in problems


def test_unfinished_is_409_and_other_workspace_is_404(client: ApiClient, server, db, workspace) -> None:  # type: ignore[no-untyped-def]
    from shared.ids import new_id
    from shared.store import workspaces

    # A running execution with no outbox row: no worker can finish it while we look.
    execution_id = new_id("exec")
    db.execute("INSERT INTO executions (id, workspace_id, task, status, compliance_policy, policy_version,"
               " budget_cents, effective_permissions) VALUES (%s, %s, 'wait', 'running', 'default', '1.0', 100,"
               " '[\"fs:read\"]')", (execution_id, workspace[0]))
    r = client.get(f"/api/v1/compliance/executions/{execution_id}/audit-package")
    assert r.status_code == 409
    assert r.json()["detail"]["code"] == "execution_not_finished"
    ws = workspaces.get_or_create_workspace(db, "audit-other")
    other = ApiClient(server.url, workspaces.create_key(db, ws.id))
    r = other.get(f"/api/v1/compliance/executions/{execution_id}/audit-package")
    assert r.status_code == 404 and r.json()["detail"]["code"] == "execution_not_found"
    assert client.get("/api/v1/compliance/executions/exec_nope/audit-package").status_code == 404


def test_workflow_package_round_trip(stack, client: ApiClient, db, workspace, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from guard.audit_workflow import verify_any
    from shared.ids import new_id

    r = client.post("/api/v1/workflows", {"stages": [
        {"name": "a", "task": "List my documents and summarize them", "compliance_policy": "hipaa"},
        {"name": "b", "task": "Summarize: {{stages.a.output}}", "depends_on": ["a"]}]})
    workflow_id = r.json()["workflow_id"]
    wait_for(lambda: client.get(f"/api/v1/workflows/{workflow_id}").json()["status"] != "running", timeout=60)
    r = client.get(f"/api/v1/compliance/workflows/{workflow_id}/audit-package")
    assert r.status_code == 200, r.text
    report = verify_any(r.content)
    assert report.ok, [str(p) for p in report.problems]
    assert set(report.summary["stages"]) == {"a", "b"}
    path = tmp_path / "wf.zip"
    path.write_bytes(r.content)
    proc = subprocess.run([sys.executable, "-m", "warden.cli", "verify-audit", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "valid workflow audit package" in proc.stdout, proc.stdout + proc.stderr

    running = new_id("wf")
    db.execute("INSERT INTO workflows (id, workspace_id, status) VALUES (%s, %s, 'running')", (running, workspace[0]))
    r = client.get(f"/api/v1/compliance/workflows/{running}/audit-package")
    assert r.status_code == 409 and r.json()["detail"]["code"] == "workflow_not_finished"
    assert client.get("/api/v1/compliance/workflows/wf_nope/audit-package").status_code == 404


def test_package_embeds_the_policy_version_as_applied_after_an_upgrade(stack, client: ApiClient, db) -> None:  # type: ignore[no-untyped-def]
    from guard import load_policy

    execution_id = client.post("/api/v1/tasks", {"task": "List my documents", "compliance_policy": "sox"}
                               ).json()["execution_id"]
    _finished(client, execution_id)
    current = load_policy("sox")
    # The worker that applied it recorded the document of that version.
    row = db.fetchone("SELECT document FROM policy_documents WHERE name = 'sox' AND version = %s",
                      (current.version,))
    assert row is not None and row["document"] == current.document

    # As if the shipped policy had since moved on: the record says an older version was applied.
    old_version = f"{current.version}-old-{execution_id[-6:]}"
    db.execute("UPDATE executions SET policy_version = %s WHERE id = %s", (old_version, execution_id))
    r = client.get(f"/api/v1/compliance/executions/{execution_id}/audit-package")
    assert r.status_code == 409 and r.json()["detail"]["code"] == "policy_version_unavailable"

    old_document = {**current.document, "version": old_version, "description": "as it was"}
    db.execute("INSERT INTO policy_documents (name, version, document) VALUES ('sox', %s, %s)",
               (old_version, json.dumps(old_document)))
    r = client.get(f"/api/v1/compliance/executions/{execution_id}/audit-package")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert json.loads(zf.read("policy.json")) == old_document
    # Only the record was edited here, not the signed certificates (issued under the current
    # version): the verifier notices that they disagree with the embedded policy, and nothing else.
    assert {p.code for p in verify_package(r.content).problems} == {"policy_mismatch"}


def test_rolling_deploy_records_the_policy_version_applied(stack, client: ApiClient, db, workspace) -> None:  # type: ignore[no-untyped-def]
    """Accepted under a version this worker no longer ships: the worker applies its own version, the
    record says so, and the package (certificates and policy) verifies."""
    from guard import load_policy
    from shared.ids import new_id
    from shared.store import executions

    current = load_policy("hipaa")
    eid = new_id("exec")
    with db.transaction() as cur:
        executions.insert(cur, executions.NewExecution(
            id=eid, workspace_id=workspace[0], task="List my documents", compliance_policy="hipaa",
            policy_version="1999.1.1", provider="local", model="local-planner-1", budget_cents=1000,
            requested_permissions=None, effective_permissions=["fs:read"], denied_permissions=[],
            webhook_url=None))
    # No wake-up needed: the relay also polls, so the row is published within its sweep interval.
    execution = _finished(client, eid)
    assert execution["policy_version"] == current.version
    r = client.get(f"/api/v1/compliance/executions/{eid}/audit-package")
    assert r.status_code == 200, r.text
    assert verify_package(r.content).ok
