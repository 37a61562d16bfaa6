"""Opaque keyset cursors. A cursor names the last id of the page it ended; ids sort by time,
so pages are stable while rows are inserted concurrently (new rows sort before the cursor in
newest-first order and never shift later pages)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

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
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be an integer", code="invalid_limit") from None
    if limit < 1 or limit > MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    return limit


def keyset_page(cur: Any, table: str, columns: str, workspace_id: str, *, filters: tuple[str, ...] = (),
                params: tuple[Any, ...] = (), after_id: str | None, limit: int) -> tuple[list[Any], bool, int]:
    """One workspace's rows, newest first by id, after the cursor's id; with the filtered total.

    ``table`` and ``columns`` are fixed strings from the calling store (never request data);
    ``filters`` are SQL fragments whose values are bound through ``params``. Returns
    (rows of this page, whether more follow, total matching the filters).
    """
    where = ["workspace_id = %s", *filters]
    bound = [workspace_id, *params]
    cur.execute(f"SELECT count(*) AS n FROM {table} WHERE {' AND '.join(where)}", bound)
    total = int(cur.fetchone()["n"])
    if after_id is not None:
        where.append("id < %s")
        bound.append(after_id)
    cur.execute(f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                [*bound, limit + 1])
    rows = cur.fetchall()
    return list(rows[:limit]), len(rows) > limit, total
