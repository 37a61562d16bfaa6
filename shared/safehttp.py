"""Outbound HTTP that obeys the SSRF rules (webhooks and the agent's http tools).

Every request resolves the host with :func:`shared.netsafe.resolve_checked` and connects to
exactly the address that was checked (no second DNS lookup an attacker could rebind), sending
the original ``Host`` header and, for https, the original name for SNI and certificate checks.
Redirects are followed only when asked, at most a few, and each target is checked again.
Timeouts on connect and read; the body read is capped. ``deadline_s`` bounds a whole request
(connect, send and the complete response, across redirects): a peer that drips one byte at a time
never trips a per-read timeout, so at the deadline the socket is shut down under the reader.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from shared.netsafe import UnsafeTarget, resolve_checked

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 256 * 1024
MAX_REDIRECTS = 3


class HttpError(Exception):
    """The request could not be made or completed (network error, timeout, bad response)."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    url: str

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        # Verify the certificate against the name the caller asked for, not the address.
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def _once(method: str, url: str, body: bytes | None, headers: dict[str, str], *, allow_private: bool,
          timeout: float, max_bytes: int, deadline: float | None = None) -> HttpResponse:
    host, port, address = resolve_checked(url, allow_private=allow_private)
    parts = urlsplit(url)
    cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        raise HttpError("timed out: request deadline exceeded")
    conn = cls(host, port, address, timeout if left is None else min(timeout, left))
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    expired = threading.Event()

    def expire() -> None:  # the deadline passed: wake whoever waits on the socket
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = None
    if left is not None:
        timer = threading.Timer(left, expire)
        timer.daemon = True
        timer.start()
    try:
        conn.connect()
        if expired.is_set():  # it passed while connecting: nobody could shut that socket down
            raise TimeoutError
        conn.request(method, path, body=body, headers={"User-Agent": "warden/1", **headers})
        resp = conn.getresponse()
        data = resp.read(max_bytes + 1)
        if expired.is_set():
            raise TimeoutError
        return HttpResponse(status=resp.status, headers={k.lower(): v for k, v in resp.getheaders()},
                            body=data[:max_bytes], truncated=len(data) > max_bytes, url=url)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise HttpError(f"timed out: request deadline of {left:.3g}s exceeded") from None
        raise HttpError(f"{type(exc).__name__}: {exc}") from None
    finally:
        if timer is not None:
            timer.cancel()
        conn.close()


def request(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
            allow_private: bool, timeout: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES,
            follow_redirects: bool = False, deadline_s: float | None = None) -> HttpResponse:
    """Make one request (following up to ``MAX_REDIRECTS`` redirects for GET when asked).
    ``timeout`` bounds the connect and each read; ``deadline_s``, when given, the whole request.

    Raises :class:`UnsafeTarget` when any target is refused and :class:`HttpError` on failure.
    """
    headers = dict(headers or {})
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    for _ in range(MAX_REDIRECTS + 1):
        resp = _once(method, url, body, headers, allow_private=allow_private, timeout=timeout, max_bytes=max_bytes,
                     deadline=deadline)
        location = resp.headers.get("location")
        if not (follow_redirects and method == "GET" and resp.status in (301, 302, 303, 307, 308) and location):
            return resp
        url = urljoin(url, location)  # checked again by resolve_checked on the next pass
    raise HttpError(f"more than {MAX_REDIRECTS} redirects")


__all__ = ["HttpError", "HttpResponse", "UnsafeTarget", "request"]


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header as seconds: a number of seconds or an HTTP date (RFC 9110), None
    when absent or unreadable. Used for webhook receivers and model vendors alike."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
