"""POST /api/v1/tasks: the one entry for both kinds of work.

The body discriminates: ``task`` → a governed agent execution (seed 000); ``intent`` → a
monitoring Task (seed 002). Exactly one of the two must be present.
"""

from __future__ import annotations

import difflib
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import workspace_id
from api.body import json_object
from api.intake import submit_execution
from api.monitoring import create_task as create_monitoring_task
from api.monitoring_schemas import MonitoringTaskRequest
from api.schemas import AgentTaskRequest
from shared.errors import BadRequest

bp = Blueprint("tasks", __name__)


@bp.post("/tasks")
def create_task() -> Response:
    """Submit an agent task (body with `task`) or create a monitoring Task (body with `intent`).
    ---
    post:
      tags: [tasks]
      summary: Submit a governed agent task, or create a monitoring Task from an intent
      parameters:
        - in: header
          name: Idempotency-Key
          schema: {type: string, maxLength: 255}
          required: false
      requestBody:
        required: true
        content:
          application/json:
            schema:
              oneOf: [AgentTaskRequest, MonitoringTaskRequest]
      responses:
        200:
          description: Monitoring Task created (body with intent), or a DryRunResult when dry_run is true
          content:
            application/json:
              schema:
                oneOf: [MonitoringTask, DryRunResult]
        201:
          description: Execution queued
          headers:
            Location: {schema: {type: string}}
          content:
            application/json:
              schema: TaskResponse
        400: {description: Invalid compliance policy or request shape; for an intent any schema or constraint error, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        403: {description: No effective permissions after the policy ceiling, content: {application/json: {schema: ErrorResponse}}}
        422: {description: Agent task field validation failed; for an intent, code no_primitive, no_valid_strategy or action_binding_failed, content: {application/json: {schema: ErrorResponse}}}
        429: {description: Rate limited, content: {application/json: {schema: ErrorResponse}}}
        503: {description: No compiler worker answered in time (intent only), content: {application/json: {schema: ErrorResponse}}}
    """
    body = json_object()
    has_task, has_intent = "task" in body, "intent" in body
    if has_task and has_intent:
        raise BadRequest("Body must contain either 'task' (agent execution) or 'intent' (monitoring task), "
                         "not both", code="invalid_request_shape")
    if not has_task and not has_intent:
        raise _neither(body)
    if has_intent:
        return create_monitoring_task(body)
    status, payload, headers = submit_execution(workspace_id(), body, request.headers.get("Idempotency-Key"))
    resp = jsonify(payload)
    resp.status_code = status
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


# Every field either kind of body may carry: anything else is named in the error.
_KNOWN_FIELDS = tuple(sorted(set(AgentTaskRequest().fields) | set(MonitoringTaskRequest().fields)))


def _neither(body: dict[str, Any]) -> BadRequest:
    """400 for a body with neither ``task`` nor ``intent``, naming the fields it has that neither
    kind knows (``{"taks": …}`` → ``unknown field 'taks' (did you mean 'task'?)``)."""
    unknown = [str(k) for k in body if k not in _KNOWN_FIELDS]
    message = "Body must contain 'task' (agent execution) or 'intent' (monitoring task)"
    if unknown:
        parts = []
        for name in unknown[:10]:
            close = difflib.get_close_matches(name, _KNOWN_FIELDS, n=1, cutoff=0.6)
            parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        message += f"; unknown field{'s' if len(unknown) > 1 else ''}: " + ", ".join(parts)
        return BadRequest(message, code="invalid_request_shape", unknown_fields=unknown[:10],
                          errors={name: ["Unknown field."] for name in unknown[:10]})
    return BadRequest(message, code="invalid_request_shape")
