"""Idempotency-Key records: the first response to a keyed request, kept for a TTL (24 h).

A repeat with the same key and the same body gets the stored response and creates nothing; the
same key with a different body is refused (422). Keys are scoped to the workspace.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from shared.db import Json
from shared.errors import Unprocessable


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def lookup(cur: Any, workspace_id: str, key: str, req_hash: str, ttl_s: int) -> StoredResponse | None:
    cur.execute(
        "SELECT request_hash, status_code, response, headers FROM idempotency_keys"
        " WHERE workspace_id = %s AND key = %s AND created_at > now() - make_interval(secs => %s)",
        (workspace_id, key, ttl_s),
    )
    row = cur.fetchone()
    if row is None:
        return None
    if row["request_hash"] != req_hash:
        raise Unprocessable(
            "Idempotency-Key was already used with a different request body",
            code="idempotency_key_reused",
        )
    return StoredResponse(row["status_code"], row["response"], row["headers"])


def claim(cur: Any, workspace_id: str, key: str, req_hash: str, response: StoredResponse, ttl_s: int) -> bool:
    """Record the response inside the creating transaction. False when another request holds
    the key (the INSERT waits for that transaction; the caller rolls back and replays)."""
    cur.execute(
        "INSERT INTO idempotency_keys (workspace_id, key, request_hash, status_code, response, headers)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (workspace_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,"
        "   status_code = EXCLUDED.status_code, response = EXCLUDED.response,"
        "   headers = EXCLUDED.headers, created_at = now()"
        " WHERE idempotency_keys.created_at <= now() - make_interval(secs => %s)"
        " RETURNING 1",
        (workspace_id, key, req_hash, response.status_code, Json(response.body), Json(response.headers), ttl_s),
    )
    return cur.fetchone() is not None


def purge_expired(cur: Any, ttl_s: int) -> int:
    cur.execute("DELETE FROM idempotency_keys WHERE created_at <= now() - make_interval(secs => %s)", (ttl_s,))
    return int(cur.rowcount)
