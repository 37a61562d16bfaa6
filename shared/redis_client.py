"""Redis clients (one pool per process, created lazily, re-created after fork)."""

from __future__ import annotations

import os
import threading

import redis


class RedisHandle:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = redis.Redis.from_url(
                        self.url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30)
                    self._pid = pid
        return self._client

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False
