"""Reading and operating monitoring Tasks: list, get, patch, soft delete (seed 002).

Creation is ``POST /api/v1/tasks`` with ``intent`` (api/routes/tasks.py → api/monitoring.py).
These ``/tasks`` routes are monitoring Tasks only; agent executions are read at /executions.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api import monitoring, monitoring_present
from api.auth import workspace_id
from api.body import json_object
from api.services import services
from shared.errors import BadRequest, NotFound
from shared.paging import decode_cursor, encode_cursor, parse_limit
from shared.store import tasks

bp = Blueprint("monitoring", __name__)


@bp.get("/tasks")
def list_tasks() -> Response:
    """List monitoring Tasks, newest first.
    ---
    get:
      tags: [monitoring]
      summary: List monitoring Tasks (agent executions are at /api/v1/executions)
      parameters:
        - {in: query, name: status, schema: {type: string, enum: [active, paused, deleted]}}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
        - {in: query, name: cursor, schema: {type: string}}
      responses:
        200: {description: A page of Tasks, content: {application/json: {schema: MonitoringTaskList}}}
        400: {description: Bad status filter, limit or cursor, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        429: {description: Rate limited, content: {application/json: {schema: ErrorResponse}}}
    """
    status = request.args.get("status")
    if status is not None and status not in tasks.STATUSES:
        raise BadRequest(f"status must be one of {', '.join(tasks.STATUSES)}", code="invalid_status")
    limit = parse_limit(request.args.get("limit"))
    after = decode_cursor(request.args.get("cursor"))
    items, has_more, total = tasks.list_page(services().db, workspace_id(), status=status, after_id=after,
                                             limit=limit)
    return jsonify({
        "items": [monitoring_present.task(t) for t in items],
        "has_more": has_more,
        "next_cursor": encode_cursor(items[-1].id) if has_more and items else None,
        "total_count": total,
    })


def _detail(task: tasks.Task) -> Response:
    return jsonify(monitoring_present.detail(task, tasks.pinned(services().db, task)))


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Response:
    """The Task with its pinned concept, condition and action, and trigger metadata.
    ---
    get:
      tags: [monitoring]
      parameters:
        - {in: path, name: task_id, required: true, schema: {type: string}}
      responses:
        200: {description: The Task, content: {application/json: {schema: MonitoringTaskDetail}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such Task in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    task = tasks.get(services().db, workspace_id(), task_id)
    if task is None:
        raise NotFound(f"Task {task_id} not found", code="task_not_found")
    return _detail(task)


@bp.patch("/tasks/<task_id>")
def patch_task(task_id: str) -> Response:
    """Update operational settings. Concept, condition logic, strategy, parameters and action ids
    cannot change here (400 naming each such field); rebinding to a calibrated condition version can.
    ---
    patch:
      tags: [monitoring]
      parameters:
        - {in: path, name: task_id, required: true, schema: {type: string}}
      requestBody:
        required: true
        content: {application/json: {schema: TaskPatchRequest, example: {status: paused}}}
      responses:
        200: {description: The updated Task, content: {application/json: {schema: MonitoringTask}}}
        400: {description: Validation error, disallowed field, empty update or unknown condition_version, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such Task in this workspace, content: {application/json: {schema: ErrorResponse}}}
        409: {description: The Task is deleted, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(monitoring_present.task(monitoring.patch_task(task_id, json_object())))


@bp.delete("/tasks/<task_id>")
def delete_task(task_id: str) -> Response:
    """Soft-delete: status becomes deleted; the Task stays readable and is never evaluated again.
    ---
    delete:
      tags: [monitoring]
      parameters:
        - {in: path, name: task_id, required: true, schema: {type: string}}
      responses:
        200: {description: The soft-deleted Task, content: {application/json: {schema: MonitoringTask}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such Task in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(monitoring_present.task(monitoring.delete_task(task_id)))
