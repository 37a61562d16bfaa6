"""Per-process resources for tasks: settings, database pool, Redis. Built on first use in each
worker process (after the prefork), never at import time."""

from __future__ import annotations

import os

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
        # Bounded however many runs are in flight: a run holds a connection only for the length of
        # one step's statement (never across a model call), and callers beyond the pool's size
        # queue for it (shared/db.Database); WARDEN_DB_POOL_MAX sizes it.
        handle = Database(s.database_url, minconn=1, maxconn=s.db_pool_max,
                          application_name=f"warden-worker:{os.getpid()}")
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
