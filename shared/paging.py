"""Opaque keyset cursors. A cursor names the last id of the page it ended; ids sort by time,
so pages are stable while rows are inserted concurrently (new rows sort before the cursor in
newest-first order and never shift later pages)."""

from __future__ import annotations

import base64
import binascii
import json

from shared.errors import BadRequest

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def encode_cursor(last_id: str) -> str:
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["after"]
        if not isinstance(value, str):
            raise ValueError
        return value
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadRequest("cursor is not a cursor this API returned", code="invalid_cursor") from None


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer", code="invalid_limit") from None
    if limit < 1 or limit > MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    return limit
