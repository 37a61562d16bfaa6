"""Reading request bodies: JSON objects only, with clear 400s for anything else."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from shared.errors import BadRequest


def json_object() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw:
        raise BadRequest("Request body must be a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object", code="invalid_json")
    if "\\u0000" in raw.decode("utf-8", "replace") and _has_nul(body):
        raise BadRequest(NUL_MESSAGE, code="invalid_characters")
    return body


NUL_MESSAGE = "Text must not contain NUL (U+0000) characters"


def _has_nul(value: Any) -> bool:
    """PostgreSQL text cannot hold U+0000; refuse it at the edge rather than fail in the store."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def reject_nul_in_url() -> None:
    """before_request hook: the same rule for paths and query strings."""
    environ = request.environ
    query = environ.get("QUERY_STRING", "")
    if "\x00" not in environ.get("PATH_INFO", "") and "%00" not in query and "\x00" not in query:
        return  # the common case, decided on the raw strings without building request.args
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.args.items(multi=True)):
        raise BadRequest(NUL_MESSAGE, code="invalid_characters")
