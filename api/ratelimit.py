"""Per-key token bucket in Redis (one EVALSHA per request, atomic across API processes).

Written by hand because the maintained Flask limiters count fixed or sliding windows, while the
contract here is a token bucket (steady rate plus burst) with RateLimit-* headers.

It is the one Redis round trip on every authenticated request, so it is sent lean (see
:class:`LeanRedis`): a pre-packed ``EVALSHA`` on a connection of its own, RESP2, without
redis-py's generic per-command machinery (retry wrapper, pool bookkeeping, observability hooks,
reply callbacks), which cost more CPU than the round trip itself. The script is loaded on a
NOSCRIPT answer (a restarted or flushed Redis).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass

import redis
from redis.exceptions import NoScriptError

from shared.groupcommit import GroupWriter

_SCRIPT = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""
_SCRIPT_B = _SCRIPT.encode()
_SHA_B = hashlib.sha1(_SCRIPT_B).hexdigest().encode()  # noqa: S324 - Redis names scripts by SHA-1


def _pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class LeanRedis:
    """Request/reply on idle connections kept per process (LIFO, at most ``max_idle``).

    Connections are redis-py's own (the URL decides TCP, TLS or a Unix socket, AUTH and db), only
    the per-command path is skipped. A reused connection that fails to connect, send or read is
    dropped and the command tried once more on a fresh one (a timeout is not retried); any other
    failure drops the connection and raises, so no connection with an unread reply is reused.
    """

    def __init__(self, url: str, *, max_idle: int = 64) -> None:
        self._pool = redis.ConnectionPool.from_url(url, protocol=2, socket_connect_timeout=3, socket_timeout=10)
        self._max_idle = max_idle
        self._idle: list[redis.connection.AbstractConnection] = []
        self._pid = os.getpid()

    def call(self, packed: bytes):  # type: ignore[no-untyped-def]
        reply = self.call_many([packed])[0]
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def call_many(self, packed: list[bytes]) -> list:  # type: ignore[type-arg]
        """Pipelined: every command sent in one write, the replies read in order. An error reply
        is returned in its place (as the ResponseError), not raised."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle, self._pid = [], os.getpid()
        idle = self._idle
        if idle:
            conn = idle.pop()
            try:
                return self._roundtrip(conn, packed)
            except redis.ConnectionError:
                pass  # stale (Redis restarted, idle timeout): once more on a fresh connection
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        conn.connect()
        return self._roundtrip(conn, packed)

    def _roundtrip(self, conn, packed: list[bytes]) -> list:  # type: ignore[no-untyped-def, type-arg]
        replies = []
        try:
            conn.send_packed_command(packed, check_health=False)
            for _ in packed:
                try:
                    replies.append(conn.read_response(disconnect_on_error=False))
                except redis.ResponseError as exc:  # read in full: the connection stays clean
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        self._release(conn)
        return replies

    def _release(self, conn) -> None:  # type: ignore[no-untyped-def]
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.disconnect()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    limit: int
    retry_after_s: int
    reset_s: int


class TokenBucket:
    """``hit(bucket)`` for each request. Concurrent requests of one process share a round trip:
    their EVALSHAs are pipelined in one write (:class:`shared.groupcommit.GroupWriter`; a lone
    request is sent at once)."""

    def __init__(self, client: LeanRedis, rate_per_s: float, burst: int) -> None:
        self.client = client
        self.rate = rate_per_s
        self.burst = burst
        # Everything but the key and the clock is fixed: packed once.
        self._rate_arg = repr(float(rate_per_s)).encode()
        self._burst_arg = str(int(burst)).encode()
        self._group: GroupWriter[str, Verdict] = GroupWriter(self._hit_many)

    def hit(self, bucket: str) -> Verdict:
        return self._group.submit(bucket)

    def _hit_many(self, buckets: list[str]) -> list[Verdict]:
        now = repr(time.time()).encode()
        packed = [_pack(b"EVALSHA", _SHA_B, b"1", f"ratelimit:{b}".encode(), self._rate_arg, self._burst_arg, now)
                  for b in buckets]
        replies = self.client.call_many(packed)
        if any(isinstance(r, NoScriptError) for r in replies):  # a restarted or flushed Redis
            self.client.call(_pack(b"SCRIPT", b"LOAD", _SCRIPT_B))
            redo = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            for i, r in zip(redo, self.client.call_many([packed[i] for i in redo]), strict=True):
                replies[i] = r
        return [self._verdict(r) for r in replies]

    def _verdict(self, reply: object) -> Verdict:
        if isinstance(reply, redis.ResponseError):
            raise reply
        allowed, tokens_raw = reply  # type: ignore[misc]
        tokens = float(tokens_raw)
        retry_after = 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))
        reset = math.ceil((self.burst - tokens) / self.rate)
        return Verdict(bool(allowed), int(tokens), self.burst, retry_after, reset)
