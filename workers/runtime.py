"""Per-process resources for tasks: settings, database pool, Redis. Built on first use in each
worker process (after the prefork), never at import time."""

from __future__ import annotations

from celery import current_app

from shared.config import Settings, load_settings
from shared.db import Database
from shared.redis_client import RedisHandle

_state: dict[str, object] = {}


def settings() -> Settings:
    s = current_app.conf.get("warden_settings")
    if s is None:
        s = _state.get("settings") or load_settings()
        _state["settings"] = s
    return s  # type: ignore[no-any-return]


def db() -> Database:
    s = settings()
    key = ("db", s.database_url)
    handle = _state.get(str(key))
    if handle is None:
        # An agent run holds one connection for its whole run (its advisory lock lives there) and
        # briefly a second; thread pools run several at once.
        handle = Database(s.database_url, minconn=1, maxconn=16)
        _state[str(key)] = handle
    return handle  # type: ignore[return-value]


def redis() -> RedisHandle:
    s = settings()
    key = ("redis", s.redis_url)
    handle = _state.get(str(key))
    if handle is None:
        handle = RedisHandle(s.redis_url)
        _state[str(key)] = handle
    return handle  # type: ignore[return-value]
