"""Per-app service handles, built once by the app factory from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from api.ratelimit import TokenBucket
from api.tokens import StreamTokens
from shared.config import Settings
from shared.db import Database
from shared.redis_client import RedisHandle


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: RedisHandle
    tokens: StreamTokens
    celery: Any
    _bucket: TokenBucket | None = None

    @property
    def bucket(self) -> TokenBucket:
        if self._bucket is None or self._bucket.client is not self.redis.client:
            self._bucket = TokenBucket(self.redis.client, self.settings.rate_limit_per_s,
                                       self.settings.rate_limit_burst)
        return self._bucket


def services() -> Services:
    return current_app.extensions["warden"]  # type: ignore[no-any-return]
