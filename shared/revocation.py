"""API key revocation that reaches every API process at once.

API processes remember a verified key for ``WARDEN_AUTH_CACHE_S`` so that a request costs no
database round trip. Revoking a key (``warden revoke-key``) also increments a counter in Redis,
``EPOCH_KEY``; the rate-limit script, the one Redis round trip every authenticated request makes
anyway, returns it with its verdict (api/ratelimit.py). A process that sees the counter move
forgets every key it remembered and checks the request's key against the database again, so the
revoked key's next request is refused, whichever process serves it. When Redis cannot be reached
the remembered keys still expire after ``WARDEN_AUTH_CACHE_S``.
"""

from __future__ import annotations

import redis

EPOCH_KEY = "warden:keys:revoked"


def announce(redis_url: str) -> None:
    """Tell every API process that a key was revoked (after the database says so)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        client.incr(EPOCH_KEY)
    finally:
        client.close()
