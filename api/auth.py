"""Bearer-key authentication and per-key rate limiting for /api/v1."""

from __future__ import annotations

import redis
from flask import g, request

from api.services import services
from shared.errors import RateLimited, Unauthorized
from shared.store import workspaces


def authenticate_request() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Missing or invalid API key", code="unauthorized")
    principal = workspaces.authenticate(services().db, key.strip())
    if principal is None:
        raise Unauthorized("Missing or invalid API key", code="unauthorized")
    g.principal = principal
    _rate_limit(principal.key_id)


def _rate_limit(bucket: str) -> None:
    try:
        verdict = services().bucket.hit(bucket)
    except redis.RedisError:
        return  # fail open: a Redis blip must not take the API down with it
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
