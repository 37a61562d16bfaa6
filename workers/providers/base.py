"""The one interface every model provider implements, and the provider-neutral conversation.

Conversation messages (stored in the execution's state, so a resumed run continues it):

- ``{"role": "user", "content": str}``
- ``{"role": "assistant", "content": str | None, "tool_calls": [{"id", "name", "arguments": dict}]}``
- ``{"role": "tool", "tool_call_id": str, "name": str, "content": str, "is_error": bool}``

Each provider translates these to its wire format and its reply back to a :class:`Completion`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from shared.safehttp import retry_after_s

MAX_OUTPUT_TOKENS = 1024


@dataclass(frozen=True)
class Completion:
    text: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None


class ProviderError(Exception):
    """A failed model call. ``transient`` errors (rate limits, 5xx, timeouts, connection
    failures) are retried with backoff; the others end the run ``error`` with ``code``."""

    def __init__(self, code: str, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after  # seconds the vendor asked us to wait (its retry-after header)


class Provider(Protocol):
    name: str

    def complete(self, *, model: str, system: str, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]]) -> Completion: ...


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool arguments as a dict. Malformed JSON is kept as ``{"_raw": text}`` so the guard
    refuses the call as invalid arguments and the model sees why (nothing is guessed)."""
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"_raw": str(raw)[:2000]}
    return value if isinstance(value, dict) else {"_raw": str(raw)[:2000]}


def classify_status(status: int) -> tuple[str, bool]:
    """(error code, transient?) for an HTTP status from a vendor API."""
    if status == 429:
        return "provider_rate_limited", True
    if status in (408, 409) or status >= 500:
        return "provider_unavailable", True
    if status in (401, 403):
        return "provider_auth_failed", False
    if status == 404:
        return "provider_model_not_found", False
    return "provider_bad_request", False


def retry_after(headers: Any) -> float | None:
    """Seconds from a vendor's ``retry-after-ms`` or ``retry-after`` header (seconds or an HTTP
    date), or None when it sent neither or something unreadable."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    return retry_after_s(headers.get("retry-after"))


@functools.cache
def shared_tls_context() -> Any:
    """The process's one TLS context for the vendors' SDK clients: building one (loading the CA
    bundle) costs tens of milliseconds, paid once rather than per client. A client-side context
    is safe to share between connections and threads. Built by the SDKs' HTTP library itself
    (``httpx2.create_ssl_context``, what each client would otherwise build), so the trust store
    and the ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` overrides are exactly what the SDK would use."""
    import httpx2

    return httpx2.create_ssl_context()


def json_answer(body: bytes, vendor: str) -> Any:
    """A vendor's answer body as JSON; ProviderError ``provider_bad_response`` (saying what came
    back) when it is not JSON (a proxy's error page, an empty body)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProviderError("provider_bad_response", f"{vendor} answered with something other than JSON: "
                                                     f"{body[:200]!r}", transient=False) from None


def token_count(value: Any, vendor: str, *, optional: bool = False) -> int:
    """A token count from a vendor's usage object (``optional``: absent is 0); ProviderError
    ``provider_bad_response`` for anything but a count."""
    if value is None and optional:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError("provider_bad_response", f"{vendor} returned a token count of {value!r}", transient=False)
    return value
