"""Monitoring Tasks (seed 002): validate → compile on the ``compiler`` queue → persist → answer.

``create_task`` is called by ``POST /api/v1/tasks`` for a body with ``intent``. The pipeline runs
in a worker (api/compile_client.py); this module persists what it returns (concept 1.0, condition
1.0, action 1.0 and the Task, with the Idempotency-Key record) in one transaction. ``dry_run``
returns the DryRunResult and writes nothing. PATCH and DELETE change only operational settings.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from api import monitoring_present as present
from api.auth import workspace_id
from api.compile_client import compile_remote
from api.idempotency import check_key, create_once
from api.monitoring_schemas import PATCHABLE, MonitoringTaskRequest, TaskPatchRequest, load_400
from api.services import Services, services
from compiler import CompileError, load_guardrails
from compiler.binding import bind_action
from shared.errors import BadRequest, Conflict, NotFound, Unprocessable, WardenError
from shared.ids import new_id
from shared.netsafe import check_url_literal
from shared.store import conditions, idempotency, tasks
from shared.store import guardrails as guardrails_store

_create_schema = MonitoringTaskRequest()
_patch_schema = TaskPatchRequest()

_IMMUTABLE_HINT = ("task logic is immutable: change parameters with POST /api/v1/conditions/{id}/apply-calibration, "
                   "then PATCH condition_version")


class _KeyRaced(Exception):
    """Another request claimed the same Idempotency-Key first."""


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    resp = jsonify(payload)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def compile_request(svc: Services, ws: str, intent: str, entity_scope: str, delivery: dict[str, Any],
                    constraints: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    """(compiled dict, guardrails revision) under the workspace's current guardrails; 422 / 400 / 503."""
    answer, revision = compile_remote(svc, {
        "intent": intent, "entity_scope": entity_scope, "delivery": delivery, "constraints": constraints,
        "workspace_id": ws, "allow_private_webhooks": svc.settings.allow_private_webhooks,
    })
    if answer.get("ok"):
        return answer["compiled"], revision
    err = answer.get("error") or {}
    code = err.get("code", "internal_error")
    if code == "invalid_request":
        raise BadRequest(err.get("message", "Invalid request"), code="invalid_constraints")
    if code == "internal_error":
        raise WardenError("The compiler failed unexpectedly", code="internal_error", status=500)
    raise Unprocessable(err.get("message", "The intent could not be resolved"), code=code,
                        trace=err.get("trace", []))


def clean_constraints(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    cleaned = {k: v for k, v in raw.items() if v is not None}
    return cleaned or None


def create_task(body: dict[str, Any]) -> Response:
    """POST /api/v1/tasks with ``intent``: 200 Task, 200 DryRunResult, 400, 422, 503."""
    svc = services()
    ws = workspace_id()
    data = load_400(_create_schema, body)
    constraints = clean_constraints(data["constraints"])
    if data["dry_run"]:
        compiled, _ = compile_request(svc, ws, data["intent"], data["entity_scope"], data["delivery"], constraints)
        return _json(200, present.dry_run(data["intent"], data["entity_scope"], compiled))

    idem_key = request.headers.get("Idempotency-Key")
    ttl = svc.settings.idempotency_ttl_s
    req_hash = idempotency.request_hash("POST", "/api/v1/tasks", body)
    if idem_key is not None:
        check_key(idem_key)
        with svc.db.transaction() as cur:  # a repeat answers before compiling anything
            stored = idempotency.lookup(cur, ws, idem_key, req_hash, ttl)
        if stored is not None:
            return _json(stored.status_code, stored.body, stored.headers)

    compiled, revision = compile_request(svc, ws, data["intent"], data["entity_scope"], data["delivery"],
                                         constraints)
    condition = {**compiled["condition"], "trace": compiled["trace"]}
    new = tasks.NewTask(
        task_id=new_id("task"), concept_id=new_id("cpt"), condition_id=new_id("cond"), action_id=new_id("act"),
        workspace_id=ws, intent=data["intent"], constraints=constraints, entity_scope=data["entity_scope"],
        concept=compiled["concept"], condition=condition, action=compiled["action"],
        guardrails_version=compiled["guardrails_version"], guardrails_revision=revision,
    )
    headers = {"Location": f"/api/v1/tasks/{new.task_id}"}
    if idem_key is None:
        with svc.db.autocommit() as cur:  # one statement writes all four rows: atomic on its own
            return _json(200, present.task(tasks.insert(cur, new)), headers)

    def create(cur: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, present.task(tasks.insert(cur, new)), headers

    (status, payload, stored_headers), _ = create_once(svc, ws, idem_key, "/api/v1/tasks", body, create)
    return _json(status, payload, stored_headers)


def _guardrails_for(svc: Services, ws: str, revision: int) -> Any:
    if not revision:
        return load_guardrails(None)
    row = guardrails_store.get_revision(svc.db, ws, revision)
    return load_guardrails(row.document if row else None)


def _bind(svc: Services, ws: str, task: tasks.Task, delivery: dict[str, Any], description: str) -> dict[str, Any]:
    """A new action binding for ``delivery``, checked exactly as at creation."""
    allow = svc.settings.allow_private_webhooks
    try:
        binding, _ = bind_action(delivery, _guardrails_for(svc, ws, task.guardrails_revision), description,
                                 lambda url: check_url_literal(url, allow_private=allow), [])
    except CompileError as exc:
        raise BadRequest(exc.message, code=exc.code, errors={"delivery": [exc.message]}) from None
    return binding


def patch_task(task_id: str, body: dict[str, Any]) -> tasks.Task:
    """PATCH: ``condition_version``, ``delivery``, ``entity_scope``, ``status`` (active|paused) only."""
    svc = services()
    ws = workspace_id()
    disallowed = [k for k in body if k not in PATCHABLE]
    if disallowed:
        raise BadRequest(f"Cannot update {', '.join(disallowed)}: {_IMMUTABLE_HINT}. Allowed: "
                         f"{', '.join(PATCHABLE)}", code="disallowed_update",
                         errors={k: ["This field cannot be updated."] for k in disallowed})
    if not body:
        raise BadRequest(f"Pass at least one of {', '.join(PATCHABLE)}", code="empty_update")
    data = load_400(_patch_schema, body)
    with svc.db.transaction() as cur:
        task = tasks.get(None, ws, task_id, cur=cur, lock=True)
        if task is None:
            raise NotFound(f"Task {task_id} not found", code="task_not_found")
        if task.status == "deleted":
            raise Conflict(f"Task {task_id} is deleted and cannot be changed", code="task_deleted")
        version = data.get("condition_version")
        condition = conditions.get_condition(None, ws, task.condition_id, version or task.condition_version,
                                             cur=cur)
        if condition is None:
            raise BadRequest(f"Condition {task.condition_id} has no version {version}",
                             code="unknown_condition_version",
                             errors={"condition_version": ["Unknown version of the task's condition."]})
        action_version = None
        if "delivery" in data:
            binding = _bind(svc, ws, task, data["delivery"], condition.body.get("description", ""))
            action_version = conditions.next_action_version(cur, ws, task.action_id, binding)
        return tasks.update(cur, ws, task_id, status=data.get("status"), entity_scope=data.get("entity_scope"),
                            condition_version=version, action_version=action_version)


def delete_task(task_id: str) -> tasks.Task:
    """Soft delete: status ``deleted``; the row stays readable and is never evaluated again."""
    svc = services()
    ws = workspace_id()
    with svc.db.transaction() as cur:
        task = tasks.get(None, ws, task_id, cur=cur, lock=True)
        if task is None:
            raise NotFound(f"Task {task_id} not found", code="task_not_found")
        if task.status == "deleted":
            return task
        return tasks.update(cur, ws, task_id, status="deleted")
