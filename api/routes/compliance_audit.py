"""Audit package export: a finished execution as a signed zip that `warden verify-audit` checks
offline (guard/audit.py defines the format)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response

from api.auth import workspace_id
from api.routes.workflows import workflow_json  # the same JSON GET /workflows/{id} returns
from api.services import Services, services
from guard import SigningKey, load_policy, public_jwk
from guard.audit import build_package
from guard.audit_workflow import build_workflow_package
from guard.certificates import b64url_decode
from shared.errors import Conflict, NotFound
from shared.store import audit, policy_documents, signing_keys, workflows
from shared.views import execution_json

bp = Blueprint("compliance_audit", __name__)


def server_key(svc: Services) -> SigningKey:
    """The key that signs checkpoints: the configured WARDEN_SIGNING_KEY, else the same stored
    generated key the workers sign certificates with (created on first use, race-safe)."""
    settings = svc.settings
    if settings.signing_key:
        key = SigningKey.load(settings.signing_key)
        signing_keys.register_configured(svc.db, key.key_id, key.public_jwk()["x"])
        return key

    def generate() -> signing_keys.KeyMaterial:
        new = SigningKey.generate()
        return signing_keys.KeyMaterial(new.key_id, new.public_jwk()["x"], new.seed_base64url())

    return SigningKey.from_base64url(signing_keys.active_generated(svc.db, settings.secret_key, generate).seed)


def execution_package(svc: Services, ws_id: str, execution_id: str) -> bytes:
    """The audit package bytes (404 other workspace or unknown, 409 not finished)."""
    records = audit.execution_records(svc.db, ws_id, execution_id)
    if records is None:
        raise NotFound(f"Execution {execution_id} not found", code="execution_not_found")
    e = records.execution
    if not e.terminal:
        raise Conflict(f"Execution {execution_id} is {e.status}; audit packages are for finished executions",
                       code="execution_not_finished", execution_status=e.status)
    policy = load_policy(e.compliance_policy)
    document = policy.document
    if policy.version != e.policy_version:
        # Policies ship with the code: an older version's document is the one its worker recorded.
        recorded = policy_documents.get(svc.db, e.compliance_policy, e.policy_version)
        if recorded is None:
            raise Conflict(f"Policy {policy.name} v{e.policy_version} as applied is no longer available (now "
                           f"v{policy.version})", code="policy_version_unavailable")
        document = recorded
    key = server_key(svc)
    kids = {str(c["key_id"]) for c in records.certificates if isinstance(c.get("key_id"), str)} | {key.key_id}
    keys = [{**public_jwk(b64url_decode(r["public_x"])), "kid": r["key_id"]}
            for r in audit.public_keys(svc.db, kids)]
    return build_package(execution=execution_json(e), events=records.events, certificates=records.certificates,
                         violations=records.violations, policy_document=document, keys=keys,
                         signing_key=key, created_at=datetime.now(UTC).isoformat())


@bp.get("/compliance/executions/<execution_id>/audit-package")
def execution_audit_package(execution_id: str) -> Response:
    """Download the audit package of a finished execution (verify it offline with `warden verify-audit FILE`).
    ---
    get:
      tags: [compliance]
      parameters:
        - {in: path, name: execution_id, required: true, schema: {type: string}}
      responses:
        200: {description: "A zip: manifest.json, execution.json, events.jsonl, certificates.jsonl, violations.jsonl, policy.json, keys.json, checkpoint.json (signed)", content: {application/zip: {schema: {type: string, format: binary}}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such execution in this workspace, content: {application/json: {schema: ErrorResponse}}}
        409: {description: The execution has not finished, content: {application/json: {schema: ErrorResponse}}}
    """
    data = execution_package(services(), workspace_id(), execution_id)
    return Response(data, mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="audit-{execution_id}.zip"', "Cache-Control": "no-store"})


@bp.get("/compliance/workflows/<workflow_id>/audit-package")
def workflow_audit_package(workflow_id: str) -> Response:
    """Download the audit package of a finished workflow: its record and event log, and each started stage's execution package, under one signed checkpoint.
    ---
    get:
      tags: [compliance]
      parameters:
        - {in: path, name: workflow_id, required: true, schema: {type: string}}
      responses:
        200: {description: "A zip: manifest.json, workflow.json, workflow_events.jsonl, stages/<name>.zip, keys.json, checkpoint.json (signed)", content: {application/zip: {schema: {type: string, format: binary}}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such workflow in this workspace, content: {application/json: {schema: ErrorResponse}}}
        409: {description: The workflow has not finished, content: {application/json: {schema: ErrorResponse}}}
    """
    svc, ws_id = services(), workspace_id()
    found = workflows.get(svc.db, ws_id, workflow_id)
    if found is None:
        raise NotFound(f"Workflow {workflow_id} not found", code="workflow_not_found")
    wf, stages = found
    if wf["status"] == "running":
        raise Conflict(f"Workflow {workflow_id} is running; audit packages are for finished workflows",
                       code="workflow_not_finished", workflow_status=wf["status"])
    packages = {s["name"]: execution_package(svc, ws_id, s["execution_id"]) for s in stages if s["execution_id"]}
    data = build_workflow_package(workflow=workflow_json(wf, stages), events=workflows.events_after(svc.db, workflow_id, 0, 100_000),
                                  stage_packages=packages, signing_key=server_key(svc),
                                  created_at=datetime.now(UTC).isoformat())
    return Response(data, mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="audit-{workflow_id}.zip"', "Cache-Control": "no-store"})
