"""Bearer-key authentication and per-key rate limiting for /api/v1.

A verified key is remembered in-process for ``WARDEN_AUTH_CACHE_S`` (5 s): the request path then
costs no database round trip. The cache is keyed by the SHA-256 of the key, never the key itself.
A revocation empties it at once (shared/revocation.py): the rate-limit verdict carries the count
of revocations, and a process that sees it move forgets every key and checks this request's key
against the database again. Without Redis, a revoked key stops working within the window.
"""

from __future__ import annotations

import hashlib
import time

import redis
from flask import g, request

from api.ratelimit import Verdict
from api.services import services
from shared.errors import RateLimited, Unauthorized
from shared.store import workspaces

_MAX_CACHED = 10_000
_cache: dict[str, tuple[float, workspaces.Principal]] = {}


def _lookup(key: str) -> workspaces.Principal | None:
    svc = services()
    ttl = svc.settings.auth_cache_s
    if ttl <= 0:
        return workspaces.authenticate(svc.db, key)
    digest = hashlib.sha256(key.encode()).hexdigest()
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    principal = workspaces.authenticate(svc.db, key)
    if principal is not None:
        if len(_cache) >= _MAX_CACHED:
            _cache.clear()
        _cache[digest] = (now + ttl, principal)
    return principal


def authenticate_request() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Missing or invalid API key", code="unauthorized")
    key = key.strip()
    principal = _lookup(key)
    if principal is None:
        raise Unauthorized("Missing or invalid API key", code="unauthorized")
    g.principal = principal
    try:
        verdict = services().bucket.hit(principal.key_id)
    except redis.RedisError:
        return  # fail open: a Redis blip must not take the API down with it
    if verdict.revocations != _revocations_seen[0]:
        _revocations_seen[0] = verdict.revocations
        _cache.clear()
        if _lookup(key) is None:  # from the database again (and remembered again if still valid)
            raise Unauthorized("Missing or invalid API key", code="unauthorized")
    _rate_limit(verdict)


# The revocation count of the last verdict (shared/revocation.py); None until the first request.
_revocations_seen: list[bytes | None] = [None]


def _rate_limit(verdict: Verdict) -> None:
    g.ratelimit = verdict
    if not verdict.allowed:
        raise RateLimited("Rate limit exceeded; retry after the interval in Retry-After", code="rate_limited",
                          retry_after=verdict.retry_after_s)


def ratelimit_headers(response):  # type: ignore[no-untyped-def]
    verdict = g.get("ratelimit")
    if verdict is not None:
        response.headers["RateLimit-Limit"] = str(verdict.limit)
        response.headers["RateLimit-Remaining"] = str(verdict.remaining)
        response.headers["RateLimit-Reset"] = str(verdict.reset_s)
        if not verdict.allowed:
            response.headers["Retry-After"] = str(verdict.retry_after_s)
    return response


def workspace_id() -> str:
    return g.principal.workspace_id  # type: ignore[no-any-return]


def key_id() -> str:
    """The id of the calling API key (stream tokens name it)."""
    return g.principal.key_id  # type: ignore[no-any-return]
