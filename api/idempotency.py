"""``Idempotency-Key`` for creating requests (POST /api/v1/tasks, POST /api/v1/workflows).

The first response is stored in the same transaction that creates the resource, so a repeat with
the same key and body within the TTL gets that response and creates nothing; the same key with
another body is a 422; a repeat racing the first one waits for it (the key's row lock) and then
replays its response, or gets 409 if the first rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.services import Services
from shared.errors import BadRequest, WardenError
from shared.store import idempotency
from shared.store.idempotency import StoredResponse

MAX_KEY = 255

Created = tuple[int, dict[str, Any], dict[str, str]]


class _KeyRaced(Exception):
    """Another request claimed the same Idempotency-Key first."""


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY:
        raise BadRequest(f"Idempotency-Key must be 1-{MAX_KEY} characters", code="invalid_idempotency_key")


def create_once(svc: Services, workspace_id: str, key: str, path: str, body: Any,
                create: Callable[[Any], Created]) -> tuple[Created, bool]:
    """Run ``create(cur)`` (inside the transaction that records its response) unless ``key`` was
    used already. Returns the response and whether this call created it."""
    check_key(key)
    ttl = svc.settings.idempotency_ttl_s
    req_hash = idempotency.request_hash("POST", path, body)
    try:
        with svc.db.transaction() as cur:
            stored = idempotency.lookup(cur, workspace_id, key, req_hash, ttl)
            if stored is not None:
                return (stored.status_code, stored.body, stored.headers), False
            status, payload, headers = create(cur)
            if not idempotency.claim(cur, workspace_id, key, req_hash, StoredResponse(status, payload, headers), ttl):
                raise _KeyRaced
        return (status, payload, headers), True
    except _KeyRaced:
        with svc.db.transaction() as cur:
            stored = idempotency.lookup(cur, workspace_id, key, req_hash, ttl)
        if stored is None:  # the other request rolled back; the client may simply retry
            raise WardenError("A request with this Idempotency-Key is in progress; retry", code="idempotency_conflict",
                              status=409) from None
        return (stored.status_code, stored.body, stored.headers), False
