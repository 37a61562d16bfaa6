"""Per-app service handles, built once by the app factory from the settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app

from api import ratelimit
from api.dispatch import GRACE_S, Dispatcher
from api.ratelimit import TokenBucket
from api.tokens import StreamTokens
from api.wakeup import OutboxWaker
from shared.config import Settings
from shared.db import Database
from shared.groupcommit import GroupWriter
from shared.redis_client import LeanRedis, RedisHandle, pack
from shared.store import executions

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: RedisHandle
    tokens: StreamTokens
    celery: Any
    _bucket: TokenBucket | None = None
    _waker: OutboxWaker | None = None
    _execution_writer: GroupWriter[executions.NewExecution, Any] | None = None
    _compiles: GroupWriter[tuple[dict[str, Any], float], Any] | None = None
    _dispatcher: Dispatcher | None = None

    @property
    def bucket(self) -> TokenBucket:
        """The rate limiter (its Redis path and its grouping are fork-safe on their own)."""
        if self._bucket is None:
            # A connection set of its own, with a short timeout: a hung Redis must not hold requests.
            self._bucket = TokenBucket(LeanRedis(self.redis.url, timeout_s=ratelimit.TIMEOUT_S),
                                       self.settings.rate_limit_per_s, self.settings.rate_limit_burst)
        return self._bucket

    @property
    def waker(self) -> OutboxWaker:
        """Coalesced outbox wake-ups: call ``waker.wake()`` after committing an outbox row."""
        if self._waker is None:
            self._waker = OutboxWaker(self.redis)
        return self._waker

    @property
    def dispatcher(self) -> Dispatcher:
        """Publishes intake's run messages after commit (api/dispatch.py)."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self.db, self.celery, self.waker)
        return self._dispatcher

    @property
    def execution_writer(self) -> GroupWriter[executions.NewExecution, Any]:
        """Intake's inserts: concurrent requests' executions written by one statement, their run
        messages published by this process's dispatcher or, under load, the relay."""
        if self._execution_writer is None:
            self._execution_writer = GroupWriter(self._write_executions)
        return self._execution_writer

    def _write_executions(self, news: list[executions.NewExecution]) -> list[int]:
        own = self.dispatcher.takes(len(news), waiting=self.execution_writer.waiting)
        with self.db.autocommit() as cur:  # one statement: atomic on its own
            outbox_ids = executions.insert_many(cur, news, publish_after_s=GRACE_S if own else None)
        self.dispatcher.announce([(oid, new.id) for oid, new in zip(outbox_ids, news, strict=True)], own=own)
        return outbox_ids

    @property
    def compiles(self) -> GroupWriter[tuple[dict[str, Any], float], Any]:
        """Compile requests on their way to the compiler queue, grouped (api/compile_client.py)."""
        if self._compiles is None:
            from api.compile_client import compile_many  # it imports this module

            self._compiles = GroupWriter(lambda items: compile_many(self, items))
        return self._compiles


    def warm(self) -> list[str]:
        """Build, before the first request, what the first requests of a new server process would
        otherwise build on their way (timed from outside, a new API process's first submission
        took 23–34 ms, the next ones 3–8): the compliance presets (read and compiled once), the
        Celery app's result backend (its module imported, its client made), its broker transport
        (the project's kombu Redis transport imported) and the handles intake uses. Nothing here
        connects (see :meth:`connect`): a server starts as it did when Redis or PostgreSQL is down.
        Returns what was warmed; a part that cannot be built is left to the request that needs it
        (which then answers the error it would have)."""
        from guard.policy import PRESET_NAMES, load_policy

        return _each({
            "policies": lambda: [load_policy(name) for name in PRESET_NAMES],
            "result backend": lambda: self.celery.backend,
            "broker transport": lambda: self.celery.connection_for_write().transport,
            "intake": lambda: (self.bucket, self.dispatcher, self.execution_writer),
        })

    def connect(self) -> list[str]:
        """Open the connections intake's first submission needs (one PostgreSQL connection, the
        rate limiter's Redis connection, the broker connection of a Celery producer), so that it
        does not wait on their handshakes. Best effort, meant to run beside the server (a thread:
        under gevent a greenlet): a service that is down is left to the request that needs it.
        Returns what connected."""
        def database() -> None:
            if not self.db.ping():
                raise ConnectionError("PostgreSQL did not answer")

        def producer() -> None:
            with self.celery.producer_or_acquire() as p:  # back to the pool, connected
                p.connection.ensure_connection(max_retries=1)
                p.channel  # noqa: B018 - its channel made now

        return _each({
            "database": database,
            "rate limiter": lambda: self.bucket.client.call(pack(b"PING")),
            "broker": producer,
        })


def _each(steps: dict[str, Callable[[], Any]]) -> list[str]:
    done = []
    for name, step in steps.items():
        try:
            step()
        except Exception:  # noqa: BLE001 - best effort; the request path reports its own failures
            log.debug("warming %s failed", name, exc_info=True)
            continue
        done.append(name)
    return done


def services() -> Services:
    return current_app.extensions["warden"]  # type: ignore[no-any-return]
