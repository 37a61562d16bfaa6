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
    return body
