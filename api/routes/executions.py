"""Reading agent executions: one, a page of them, and their event history."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api import present
from api.auth import workspace_id
from api.services import services
from shared import events as event_bus
from shared.errors import BadRequest, Conflict, NotFound
from shared.paging import decode_cursor, encode_cursor, parse_limit
from shared.store import executions, runs

bp = Blueprint("executions", __name__)


@bp.get("/executions")
def list_executions() -> Response:
    """List executions, newest first.
    ---
    get:
      tags: [executions]
      parameters:
        - {in: query, name: status, schema: {type: string, enum: [queued, running, succeeded, blocked, error, cancelled]}}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
        - {in: query, name: cursor, schema: {type: string}}
      responses:
        200: {description: A page of executions, content: {application/json: {schema: ExecutionList}}}
        400: {description: Bad filter, limit or cursor, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    status = request.args.get("status")
    if status is not None and status not in executions.STATUSES:
        raise BadRequest(f"status must be one of {', '.join(executions.STATUSES)}", code="invalid_status")
    limit = parse_limit(request.args.get("limit"))
    after = decode_cursor(request.args.get("cursor"))
    items, has_more, total = executions.list_page(services().db, workspace_id(), status=status,
                                                  after_id=after, limit=limit)
    return jsonify({
        "items": [present.execution(e) for e in items],
        "has_more": has_more,
        "next_cursor": encode_cursor(items[-1].id) if has_more and items else None,
        "total_count": total,
    })


@bp.get("/executions/<execution_id>")
def get_execution(execution_id: str) -> Response:
    """Fetch one execution.
    ---
    get:
      tags: [executions]
      parameters:
        - {in: path, name: execution_id, required: true, schema: {type: string}}
      responses:
        200: {description: The execution, content: {application/json: {schema: ExecutionSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such execution in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(_execution_json(execution_id))


def _execution_json(execution_id: str) -> dict:
    db = services().db
    e = executions.get(db, workspace_id(), execution_id)
    if e is None:
        raise NotFound(f"Execution {execution_id} not found", code="execution_not_found")
    webhook = None
    if e.webhook_url:
        with db.transaction() as cur:
            webhook = runs.webhook_status(cur, e.id)
    return present.execution(e, webhook=webhook)


@bp.post("/executions/<execution_id>/cancel")
def cancel_execution(execution_id: str) -> Response:
    """Cancel an execution: a queued one at once, a running one before its next step.
    ---
    post:
      tags: [executions]
      parameters:
        - {in: path, name: execution_id, required: true, schema: {type: string}}
      responses:
        200: {description: Cancelled (it was queued), content: {application/json: {schema: ExecutionSchema}}}
        202: {description: Cancel requested; the run stops before its next step, content: {application/json: {schema: ExecutionSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such execution in this workspace, content: {application/json: {schema: ErrorResponse}}}
        409: {description: Already finished, content: {application/json: {schema: ErrorResponse}}}
    """
    svc = services()
    with svc.db.transaction() as cur:
        outcome = runs.request_cancel(cur, workspace_id(), execution_id)
    if outcome is None:
        raise NotFound(f"Execution {execution_id} not found", code="execution_not_found")
    what, events = outcome
    event_bus.publish(svc.redis.lean, events)
    if what == "terminal":
        e = executions.get(svc.db, workspace_id(), execution_id)
        raise Conflict(f"Execution {execution_id} already finished ({e.status if e else 'unknown'})",
                       code="execution_finished", execution_status=e.status if e else None)
    resp = jsonify(_execution_json(execution_id))
    resp.status_code = 200 if what == "cancelled" else 202
    return resp


@bp.get("/executions/<execution_id>/certificates")
def list_certificates(execution_id: str) -> Response:
    """The execution's certificates in chain order, and its refused calls.
    ---
    get:
      tags: [executions]
      parameters:
        - {in: path, name: execution_id, required: true, schema: {type: string}}
      responses:
        200: {description: Certificates (verify them with GET /api/v1/compliance/keys), content: {application/json: {schema: CertificateList}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such execution in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    with services().db.transaction() as cur:
        cur.execute("SELECT 1 FROM executions WHERE id = %s AND workspace_id = %s", (execution_id, workspace_id()))
        if cur.fetchone() is None:
            raise NotFound(f"Execution {execution_id} not found", code="execution_not_found")
        certs = runs.certificates(cur, execution_id)
        refused = runs.violations(cur, execution_id)
    return jsonify({"execution_id": execution_id, "items": certs, "violations": refused, "total_count": len(certs)})


@bp.get("/executions/<execution_id>/events")
def list_events(execution_id: str) -> Response:
    """Page through an execution's events in seq order.
    ---
    get:
      tags: [executions]
      parameters:
        - {in: path, name: execution_id, required: true, schema: {type: string}}
        - {in: query, name: after, schema: {type: integer, minimum: 0, default: 0}}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 1000, default: 100}}
      responses:
        200: {description: Events after `after`, content: {application/json: {schema: EventList}}}
        400: {description: Bad after or limit, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such execution in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    try:
        after = int(request.args.get("after", "0"))
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        raise BadRequest("after and limit must be integers", code="invalid_paging") from None
    if after < 0 or not 1 <= limit <= 1000:
        raise BadRequest("after must be >= 0 and limit between 1 and 1000", code="invalid_paging")
    events = executions.events_page(services().db, workspace_id(), execution_id, after=after, limit=limit + 1)
    if events is None:
        raise NotFound(f"Execution {execution_id} not found", code="execution_not_found")
    page = events[:limit]
    # Events are numbered gaplessly from 1: the execution's count is the total.
    total = services().db.fetchone("SELECT event_count FROM executions WHERE id = %s", (execution_id,))["event_count"]
    return jsonify({"items": page, "has_more": len(events) > limit,
                    "next_after": page[-1]["seq"] if len(events) > limit else None,
                    "total_count": max(int(total), page[-1]["seq"] if page else 0)})
