"""The one error envelope: ``{"detail": {"message", "code", ...}}`` for every 4xx and 5xx.

Our ``WardenError``s, marshmallow's ``ValidationError`` (→ 422, ``errors`` per field), Werkzeug's
``HTTPException`` (404, 405, 413, …), PostgreSQL unreachable or failing under a request (→ 503
``database_unavailable`` with ``retry_after`` and a ``Retry-After`` header, never a 500) and
anything unexpected (→ 500, logged, no internals leaked) all leave through here, as JSON.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg2
from flask import Flask, Response, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from shared.db import unavailable
from shared.errors import WardenError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
    500: "internal_error", 501: "not_implemented", 503: "service_unavailable",
}


def envelope(status: int, message: str, code: str, **extra: Any) -> Response:
    detail: dict[str, Any] = {"message": message, "code": code}
    detail.update(extra)
    resp = jsonify({"detail": detail})
    resp.status_code = status
    return resp


def _warden_error(exc: WardenError) -> Response:
    exact = getattr(exc, "exact_detail", None)
    if exact is not None:  # a contract that fixes the body to the letter (seed 000's 403)
        resp = jsonify({"detail": exact})
        resp.status_code = exc.status
        return resp
    resp = envelope(exc.status, exc.message, exc.code, **exc.extra)
    retry_after = exc.extra.get("retry_after")
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def _validation_error(exc: ValidationError) -> Response:
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    fields = ", ".join(sorted(str(k) for k in messages))
    return envelope(422, f"Request body failed validation: {fields}", "validation_error", errors=messages)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 404:
        message = f"No route for {request.method} {request.path}"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.path}"
    elif status == 413:
        message = "Request body is larger than the limit"
    resp = envelope(status, message, _HTTP_CODES.get(status, "http_error"))
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        resp.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return resp


def _database_error(exc: psycopg2.Error) -> Response:
    # The server went away, restarted, or refused for now (connection lost, shutting down, too many
    # clients, statement or lock timeout): the request may succeed once it is back.
    log.warning("database error on %s %s", request.method, request.path)
    return _warden_error(unavailable(exc))


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return envelope(500, "Internal server error", "internal_error")


def register(app: Flask) -> None:
    app.register_error_handler(WardenError, _warden_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(psycopg2.OperationalError, _database_error)
    app.register_error_handler(psycopg2.InterfaceError, _database_error)
    app.register_error_handler(Exception, _unexpected)
