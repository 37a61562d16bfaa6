"""Workflows: named stages with depends_on edges (a DAG), each stage an ordinary governed
execution on the executions queue; ``{{stages.<name>.output}}`` resolved when a stage starts.

The API validates the plan (names, edges, cycles, templates, policies, permissions), writes the
workflow, its stages and the root stages' executions with their outbox rows in one
transaction, and answers. Later stages are started by ``workers.workflows.advance``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import ValidationError

from api.auth import key_id, workspace_id
from api.body import json_object
from api.idempotency import create_once
from api.intake import require_configured, websocket_url
from api.services import services
from api.workflow_schemas import WorkflowCreateRequest
from guard import UnknownPolicy, display, load_policy, resolve_permissions
from shared import events as execution_events
from shared import workflow_events, workflow_plan
from shared.config import resolve_provider
from shared.errors import BadRequest, Conflict, NotFound
from shared.paging import decode_cursor, encode_cursor, parse_limit
from shared.store import workflows

bp = Blueprint("workflows", __name__)
_schema = WorkflowCreateRequest()


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _stage_json(s: dict[str, Any]) -> dict[str, Any]:
    spec = s["spec"]
    status = workflows.stage_status(s)
    policy, names = spec["compliance_policy"], tuple(s.get("record_names") or ())
    output = (s["result"] or {}).get("output") if status == "succeeded" else None
    task, resolved = spec["task"], s["execution_task"]
    if display.redacts(policy, s.get("labels") or ()):  # as its events show them
        task = display.redact_text(task, names)
        resolved = display.redact_text(resolved, names) if resolved is not None else None
        output = display.redact_text(output, names) if isinstance(output, str) else output
    return {
        "name": s["name"], "depends_on": s["depends_on"], "status": status, "execution_id": s["execution_id"],
        "task": task, "resolved_task": resolved, "compliance_policy": policy,
        "budget_cents": s["execution_budget"] if s["execution_budget"] is not None else spec["budget_cents"],
        "spent_cents": float(s["spent_cents"] or 0), "provider": spec["provider"], "model": spec["model"],
        "effective_permissions": spec["effective_permissions"],
        "output": output, "labels": list(s.get("labels") or []),
        "error": s["skip_reason"] if s["state"] == "skipped" else s["error"],
        "started_at": _ts(s["started_at"]), "finished_at": _ts(s["finished_at"]),
    }


def workflow_json(wf: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "workflow_id": wf["id"], "name": wf["name"], "status": wf["status"], "budget_cents": wf["budget_cents"],
        "spent_cents": float(sum(float(s["spent_cents"] or 0) for s in stages)), "error": wf["error"],
        "cancel_requested": wf["cancel_requested"], "stages": [_stage_json(s) for s in stages],
        "created_at": _ts(wf["created_at"]), "finished_at": _ts(wf["finished_at"]), "updated_at": _ts(wf["updated_at"]),
    }


def _publish(svc: Any, events: list[dict[str, Any]]) -> None:
    """Live copies of stored workflow events. Skipped while Redis does not answer: the request
    must not wait on a dead socket, and streams read what they missed from PostgreSQL."""
    if svc.redis.answering:
        workflow_events.publish(svc.redis.client, events)


def _resolve_stages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate the plan and each stage's policy and permissions; return the stage specs to store."""
    stages = data["stages"]
    errors = workflow_plan.validate(stages)
    if errors:
        raise ValidationError(errors)
    settings = services().settings
    out = []
    for s in stages:
        try:
            policy = load_policy(s["compliance_policy"])
        except UnknownPolicy as exc:
            raise BadRequest(f"Stage {s['name']!r}: {exc}", code="invalid_compliance_policy", stage=s["name"]) from None
        resolution = resolve_permissions(policy, s["permissions"])
        if not resolution.effective:
            raise ValidationError({f"stages.{s['name']}.permissions": [
                f"No effective permissions after applying '{policy.name}' compliance policy"]})
        provider, model = resolve_provider(settings, s["provider"], s["model"])
        require_configured(settings, provider, stage=s["name"])
        out.append({"name": s["name"], "depends_on": list(dict.fromkeys(s["depends_on"])), "task": s["task"],
                    "compliance_policy": policy.name, "policy_version": policy.version,
                    "requested_permissions": s["permissions"], "effective_permissions": resolution.effective,
                    "denied_permissions": resolution.denied, "budget_cents": s["budget_cents"],
                    "provider": provider, "model": model})
    return out


@bp.post("/workflows")
def create_workflow() -> Response:
    """Create a workflow: stages run as executions once the stages they depend on succeed.
    ---
    post:
      tags: [workflows]
      parameters:
        - {in: header, name: Idempotency-Key, required: false, schema: {type: string, maxLength: 255}, description: "Same key and body within 24 h: the first response again, nothing created twice"}
      requestBody: {required: true, content: {application/json: {schema: WorkflowCreateRequest}}}
      responses:
        201: {description: Workflow started (stages without dependencies are queued), headers: {Location: {schema: {type: string}}}, content: {application/json: {schema: WorkflowCreated}}}
        400: {description: Body is not a JSON object or a stage names an unknown compliance policy, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        409: {description: A request with the same Idempotency-Key is still in progress, content: {application/json: {schema: ErrorResponse}}}
        422: {description: "Field errors, duplicate or unknown stage names, a dependency cycle, a bad template reference, or a stage with no effective permissions (errors name them)", content: {application/json: {schema: ErrorResponse}}}
    """
    body = json_object()
    data = _schema.load(body)
    stages = _resolve_stages(data)
    svc = services()
    ws_id = workspace_id()
    published: list[dict[str, Any]] = []

    def create(cur: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        workflow_id, result = workflows.create(cur, workspace_id=ws_id, name=data["name"],
                                               budget_cents=data["budget_cents"], stages=stages)
        published.extend(result.events)
        token = svc.tokens.issue(ws_id, workflow_id, key_id())
        return 201, {"workflow_id": workflow_id, "status": result.status or "running",
                     "websocket_url": websocket_url("workflows", workflow_id, token)}, \
            {"Location": f"/api/v1/workflows/{workflow_id}"}

    idem_key = request.headers.get("Idempotency-Key")
    if idem_key is None:
        with svc.db.transaction() as cur:
            status, payload, headers = create(cur)
        created = True
    else:
        (status, payload, headers), created = create_once(svc, ws_id, idem_key, "/api/v1/workflows", body, create)
    if created:
        svc.waker.wake()
        _publish(svc, published)
    resp = jsonify(payload)
    resp.status_code = status
    resp.headers.update(headers)
    return resp


@bp.get("/workflows")
def list_workflows() -> Response:
    """List workflows, newest first.
    ---
    get:
      tags: [workflows]
      parameters:
        - {in: query, name: status, schema: {type: string, enum: [running, succeeded, failed, cancelled]}}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
        - {in: query, name: cursor, schema: {type: string}}
      responses:
        200: {description: A page of workflows, content: {application/json: {schema: WorkflowList}}}
        400: {description: Bad filter, limit or cursor, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    status = request.args.get("status")
    if status is not None and status not in workflows.STATUSES:
        raise BadRequest(f"status must be one of {', '.join(workflows.STATUSES)}", code="invalid_status")
    limit = parse_limit(request.args.get("limit"))
    after = decode_cursor(request.args.get("cursor"))
    items, has_more, total = workflows.list_page(services().db, workspace_id(), status=status, after_id=after,
                                                 limit=limit)
    return jsonify({"items": [workflow_json(wf, stages) for wf, stages in items], "has_more": has_more,
                    "next_cursor": encode_cursor(items[-1][0]["id"]) if has_more and items else None,
                    "total_count": total})


def _get(workflow_id: str) -> dict[str, Any]:
    found = workflows.get(services().db, workspace_id(), workflow_id)
    if found is None:
        raise NotFound(f"Workflow {workflow_id} not found", code="workflow_not_found")
    return workflow_json(*found)


@bp.get("/workflows/<workflow_id>")
def get_workflow(workflow_id: str) -> Response:
    """Fetch one workflow with its stages, their execution ids and statuses.
    ---
    get:
      tags: [workflows]
      parameters:
        - {in: path, name: workflow_id, required: true, schema: {type: string}}
      responses:
        200: {description: The workflow, content: {application/json: {schema: WorkflowSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such workflow in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(_get(workflow_id))


@bp.post("/workflows/<workflow_id>/cancel")
def cancel_workflow(workflow_id: str) -> Response:
    """Cancel a workflow: pending stages never start, queued ones stop at once, running ones before their next step.
    ---
    post:
      tags: [workflows]
      parameters:
        - {in: path, name: workflow_id, required: true, schema: {type: string}}
      responses:
        200: {description: Cancelled, content: {application/json: {schema: WorkflowSchema}}}
        202: {description: Cancel requested; ends when its running stages stop, content: {application/json: {schema: WorkflowSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such workflow in this workspace, content: {application/json: {schema: ErrorResponse}}}
        409: {description: Already finished, content: {application/json: {schema: ErrorResponse}}}
    """
    svc = services()
    with svc.db.transaction() as cur:
        outcome = workflows.request_cancel(cur, workspace_id(), workflow_id)
    if outcome is None:
        raise NotFound(f"Workflow {workflow_id} not found", code="workflow_not_found")
    what, result, exec_events = outcome
    execution_events.publish(svc.redis.lean, exec_events)
    _publish(svc, result.events)
    svc.waker.wake()
    body = _get(workflow_id)
    if what == "terminal":
        raise Conflict(f"Workflow {workflow_id} already finished ({body['status']})", code="workflow_finished",
                       workflow_status=body["status"])
    resp = jsonify(body)
    resp.status_code = 200 if what == "cancelled" else 202
    return resp
