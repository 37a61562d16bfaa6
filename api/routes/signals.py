"""Signals in (``POST /signals``), alerts out (``GET /tasks/{id}/alerts``), and replay
(``POST /conditions/{id}/replay``, computed on the compiler queue)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import KombuError
from marshmallow import ValidationError

from api.auth import workspace_id
from api.body import json_object
from api.monitoring_schemas import load_400
from api.services import services
from api.signals_schemas import ReplayRequest, SignalBatchRequest, SignalItem, fast_items
from shared.errors import BadRequest, NotFound, ServiceUnavailable, Unprocessable, WardenError
from shared.paging import decode_cursor, encode_cursor, parse_limit
from shared.store import alerts, signals

log = logging.getLogger(__name__)

bp = Blueprint("signals", __name__)
_batch = SignalBatchRequest()
_items = SignalItem(many=True)
_replay = ReplayRequest()

REPLAY_TASK = "workers.compiler.replay"
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def _item_errors(messages: Any) -> str:
    parts = []
    for index in sorted(messages, key=lambda k: int(k) if str(k).isdigit() else -1)[:5]:
        fields_ = messages[index]
        why = "; ".join(f"{f}: {' '.join(m) if isinstance(m, list) else m}" for f, m in fields_.items()) \
            if isinstance(fields_, dict) else str(fields_)
        parts.append(f"signals[{index}] {why}")
    more = len(messages) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


@bp.post("/signals")
def ingest() -> tuple[Response, int]:
    """Ingest a batch of signals; evaluation runs on the evaluation queue.
    ---
    post:
      tags: [signals]
      requestBody:
        required: true
        content: {application/json: {schema: SignalBatchRequest}}
      responses:
        202: {description: Stored (duplicates of entity+metric+ts ignored); evaluation enqueued, content: {application/json: {schema: SignalBatchAccepted}}}
        400: {description: Body is not a JSON object, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        413: {description: Body too large, content: {application/json: {schema: ErrorResponse}}}
        422: {description: A bad item (errors.signals names its index and why); nothing stored, content: {application/json: {schema: ErrorResponse}}}
        429: {description: Rate limited, content: {application/json: {schema: ErrorResponse}}}
    """
    data = _batch.load(json_object())
    rows = fast_items(data["signals"])
    if rows is None:  # some item is not plainly valid: the schema names each bad index and why
        try:
            items = _items.load(data["signals"])
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
            raise Unprocessable(f"Invalid signals, nothing stored: {_item_errors(messages)}",
                                errors={"signals": messages}) from None
        rows = [(i["entity"], i["metric"], i["ts"], i["value"]) for i in items]
    svc, ws = services(), workspace_id()
    with svc.db.autocommit() as cur:  # one statement: the batch and its outbox row, atomically
        stored = signals.ingest(cur, ws, rows)
    svc.waker.wake()
    return jsonify({"accepted": len(rows), "stored": stored, "duplicates": len(rows) - stored}), 202


@bp.get("/tasks/<task_id>/alerts")
def list_alerts(task_id: str) -> Response:
    """A Task's alerts, newest first, with evidence and delivery state (webhook attempts included).
    ---
    get:
      tags: [signals]
      parameters:
        - {in: path, name: task_id, required: true, schema: {type: string}}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
        - {in: query, name: cursor, schema: {type: string}}
      responses:
        200: {description: A page of alerts, content: {application/json: {schema: AlertList}}}
        400: {description: Bad limit or cursor, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such task in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    limit = parse_limit(request.args.get("limit"))
    after = decode_cursor(request.args.get("cursor"))
    page = alerts.list_for_task(services().db, workspace_id(), task_id, after_id=after, limit=limit)
    if page is None:
        raise NotFound(f"Task {task_id} not found", code="task_not_found")
    items, has_more, total = page
    return jsonify({"items": items, "has_more": has_more,
                    "next_cursor": encode_cursor(items[-1]["alert_id"]) if has_more and items else None,
                    "total_count": total})


def _wait_replay(req: dict[str, Any]) -> dict[str, Any]:
    svc = services()
    timeout = max(svc.settings.compile_timeout_s, 20.0)
    reply_to = f"warden:replay:reply:{uuid.uuid4().hex}"
    deadline = time.monotonic() + timeout
    if not svc.redis.answering:  # hung or gone: answer now rather than wait on a dead socket
        raise ServiceUnavailable("Redis does not answer (the compiler is reached through it); retry shortly",
                                 code="compiler_unavailable", retry_after=1)
    try:
        svc.celery.send_task(REPLAY_TASK, kwargs={"request": req, "reply_to": reply_to}, expires=timeout,
                             retry=True, retry_policy=_RETRY_POLICY)
    except (KombuError, redis.RedisError, OSError) as exc:
        log.warning("compiler queue unreachable: %s", exc)
        raise ServiceUnavailable("The compiler queue is unreachable; retry shortly", code="compiler_unavailable",
                                 retry_after=1) from None
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            item = svc.redis.client.blpop([reply_to], timeout=max(0.01, min(remaining, 5.0)))
        except redis.RedisError:
            raise ServiceUnavailable("Could not wait for the replay (Redis unreachable)",
                                     code="compiler_unavailable", retry_after=1) from None
        if item is not None:
            return json.loads(item[1])  # type: ignore[no-any-return]
    raise ServiceUnavailable(f"No compiler worker answered within {timeout:g} s", code="compiler_unavailable",
                             retry_after=1)


@bp.post("/conditions/<condition_id>/replay")
def replay(condition_id: str) -> Response:
    """When a condition version would have fired over stored signals in [from, to].
    Computed on the compiler queue; the same walk as live evaluation.
    ---
    post:
      tags: [calibration]
      parameters:
        - {in: path, name: condition_id, required: true, schema: {type: string}}
      requestBody:
        required: true
        content: {application/json: {schema: ReplayRequest, example: {from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z"}}}
      responses:
        200: {description: The would-have-fired times with evidence, content: {application/json: {schema: ReplayResult}}}
        400: {description: Invalid request or range, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such condition or version, content: {application/json: {schema: ErrorResponse}}}
        503: {description: No compiler worker answered in time, content: {application/json: {schema: ErrorResponse}}}
    """
    data = load_400(_replay, json_object())
    if data["start"] >= data["end"]:
        raise BadRequest("'from' must be before 'to'", code="invalid_range")
    answer = _wait_replay({"workspace_id": workspace_id(), "condition_id": condition_id,
                           "version": data["version"], "entity_scope": data["entity_scope"],
                           "from": data["start"].isoformat(), "to": data["end"].isoformat()})
    if not answer.get("ok"):
        err = answer.get("error") or {}
        raise WardenError(err.get("message", "Replay failed"), code=err.get("code", "replay_failed"),
                          status=int(err.get("status", 500)))
    return jsonify(answer["result"])
