"""Per-key token bucket in Redis (one EVALSHA per request, atomic across API processes).

Written by hand because the maintained Flask limiters count fixed or sliding windows, while the
contract here is a token bucket (steady rate plus burst) with RateLimit-* headers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

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


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    limit: int
    retry_after_s: int
    reset_s: int


class TokenBucket:
    def __init__(self, client: redis.Redis, rate_per_s: float, burst: int) -> None:
        self.client = client
        self.rate = rate_per_s
        self.burst = burst
        self._script = client.register_script(_SCRIPT)

    def hit(self, bucket: str) -> Verdict:
        allowed, tokens_raw = self._script(keys=[f"ratelimit:{bucket}"], args=[self.rate, self.burst, time.time()])
        tokens = float(tokens_raw)
        retry_after = 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))
        reset = math.ceil((self.burst - tokens) / self.rate)
        return Verdict(bool(allowed), int(tokens), self.burst, retry_after, reset)
