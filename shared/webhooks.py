"""Standard Webhooks signing (https://www.standardwebhooks.com), shared by execution callbacks
and monitoring alert delivery.

Headers: ``webhook-id`` (stable across retries of one message), ``webhook-timestamp`` (Unix
seconds of this attempt) and ``webhook-signature`` = ``v1,`` + base64 HMAC-SHA256 over
``"{id}.{timestamp}.{body}"``. The workspace secret is ``whsec_`` + standard base64 (with
padding) of 32 random bytes, the form the reference libraries decode (``new_secret``). Secrets
stored before were URL-safe base64 without padding; migration 0014 rewrote them to the standard
form of the same key bytes, and ``_key`` still reads either form, so a receiver holding the old
string keeps verifying. Per the spec, when the part after the prefix is not base64 at all the
UTF-8 secret itself is the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

MAX_RETRIES = 5  # finite: after 1 + MAX_RETRIES attempts a delivery is `failed`
SECRET_BYTES = 32  # the spec allows 24 to 64


def new_secret() -> str:
    """A fresh workspace secret: ``whsec_`` + standard base64 of ``SECRET_BYTES`` random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def backoff_s(attempt: int, base_s: float) -> float:
    """Delay before the retry that follows ``attempt`` (1-based): base × 4^(attempt-1), at most
    an hour. With the default 5 s base: 5 s, 20 s, 80 s, 320 s, 1280 s."""
    return min(base_s * 4 ** (attempt - 1), 3600.0)


def _key(secret: str) -> bytes:
    # Standard or URL-safe alphabet, padded or not: both name the same key bytes.
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    msg = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), msg, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, webhook_id, ts, body),
    }


def verify(secret: str, headers_: dict[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """Receiver side: True when one of the ``v1`` signatures matches and the timestamp is fresh."""
    h = {k.lower(): v for k, v in headers_.items()}
    try:
        ts = int(h["webhook-timestamp"])
        expected = sign(secret, h["webhook-id"], ts, body)
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    return any(hmac.compare_digest(expected, s) for s in h.get("webhook-signature", "").split())
