"""Per-key token bucket in Redis (one EVALSHA per request, atomic across API processes).

Written by hand because the maintained Flask limiters count fixed or sliding windows, while the
contract here is a token bucket (steady rate plus burst) with RateLimit-* headers.

It is the one Redis round trip on every authenticated request, so it is sent lean (see
:class:`shared.redis_client.LeanRedis`): a pre-packed ``EVALSHA`` on a connection of its own,
RESP2, without redis-py's generic per-command machinery. The script is loaded on a
NOSCRIPT answer (a restarted or flushed Redis).

A request never waits on an unresponsive Redis for long: the check has a short timeout
(``TIMEOUT_S``), and after a failure the next ``OPEN_S`` of checks fail at once without touching
Redis (the caller fails open), so a hung Redis costs one request in a while ``TIMEOUT_S``, not
every request its socket timeout.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import redis
from redis.exceptions import NoScriptError

from shared.groupcommit import GroupWriter
from shared.redis_client import LeanRedis, pack
from shared.revocation import EPOCH_KEY

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
return {allowed, tostring(tokens), redis.call('GET', KEYS[2]) or '0'}
"""
_SCRIPT_B = _SCRIPT.encode()
_SHA_B = hashlib.sha1(_SCRIPT_B).hexdigest().encode()  # noqa: S324 - Redis names scripts by SHA-1
_EPOCH_KEY_B = EPOCH_KEY.encode()

TIMEOUT_S = 0.2  # an EVALSHA takes well under a millisecond; this is a hung or lost Redis
OPEN_S = 1.0  # after a failure, checks fail at once this long; then one group tries Redis again


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    limit: int
    retry_after_s: int
    reset_s: int
    revocations: bytes = b"0"  # shared.revocation.EPOCH_KEY as the script read it


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
        self._open_until = 0.0  # monotonic time until which checks fail without trying Redis

    def hit(self, bucket: str) -> Verdict:
        """The verdict; raises redis.RedisError when Redis failed or has failed within OPEN_S."""
        if time.monotonic() < self._open_until:
            raise redis.ConnectionError("Redis failed within the last second; not tried")
        return self._group.submit(bucket)

    def _hit_many(self, buckets: list[str]) -> list[Verdict]:
        if time.monotonic() < self._open_until:  # requests queued behind a group that just failed
            raise redis.ConnectionError("Redis failed within the last second; not tried")
        now = repr(time.time()).encode()
        packed = [pack(b"EVALSHA", _SHA_B, b"2", f"ratelimit:{b}".encode(), _EPOCH_KEY_B, self._rate_arg,
                       self._burst_arg, now)
                  for b in buckets]
        try:
            replies = self.client.call_many(packed)
        except (redis.ConnectionError, redis.TimeoutError):
            self._open_until = time.monotonic() + OPEN_S
            raise
        except OSError as exc:
            self._open_until = time.monotonic() + OPEN_S
            raise redis.ConnectionError(str(exc)) from exc
        if any(isinstance(r, NoScriptError) for r in replies):  # a restarted or flushed Redis
            self.client.call(pack(b"SCRIPT", b"LOAD", _SCRIPT_B))
            redo = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            for i, r in zip(redo, self.client.call_many([packed[i] for i in redo]), strict=True):
                replies[i] = r
        return [self._verdict(r) for r in replies]

    def _verdict(self, reply: object) -> Verdict:
        if isinstance(reply, redis.ResponseError):
            raise reply
        allowed, tokens_raw, revocations = reply  # type: ignore[misc]
        tokens = float(tokens_raw)
        retry_after = 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))
        reset = math.ceil((self.burst - tokens) / self.rate)
        return Verdict(bool(allowed), int(tokens), self.burst, retry_after, reset, revocations)
