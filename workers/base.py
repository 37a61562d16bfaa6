"""The project's one task decorator (after Sentry's ``instrumented_task``).

Every task states its queue and time limits explicitly, ignores results unless asked, binds
log context, and opts into ``acks_late`` + ``reject_on_worker_lost`` only when it is idempotent
(safe to run twice): then a worker killed mid-task loses nothing, the message is redelivered.

PostgreSQL down. A message consumed while the database is unreachable (connection refused or
lost, a dead pooled connection, the pool unable to connect) is not acknowledged and dropped: the
task is retried (``autoretry_for`` those errors, exponential backoff with jitter from 1 s up to
``DB_RETRY_BACKOFF_MAX_S``, at most ``DB_RETRIES`` times, about ten minutes in all; the
periodic sweeps cover anything older). Every idempotent task gets this by default except the
agent runs (``workers.executions.*``), which recover through their own resume path and opt in
with ``retry_on_db_outage=True``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task

from shared.celery_app import queue_for
from shared.db import OUTAGE_ERRORS

DB_RETRIES = 12
DB_RETRY_BACKOFF_MAX_S = 60


class WardenTask(Task):  # type: ignore[misc]
    """Celery's Task, with one result backend per task when the task ignores its result.

    Celery keeps ``app.backend`` per thread (its Redis backend's result consumer is not
    thread-safe), and under the gevent pool every run is a thread of its own, so each run built a
    Redis result backend just to be told, at ``mark_as_done``, that there is nothing to store:
    about 2 ms of CPU per run, in the one process that holds a thousand runs. A task that ignores
    its result never makes the backend talk to Redis (neither success nor failure is stored, and
    our tasks are never part of a chord), so one instance serves all its runs. A task that keeps
    its result (``workers.compiler.compile``) keeps Celery's per-thread backend."""

    _shared_backend: Any = None
    _explicit_backend: Any = None  # one given as the task's ``backend`` option or set on it

    @property  # type: ignore[override]
    def backend(self) -> Any:
        explicit = self._explicit_backend
        if explicit is not None or not self.ignore_result:
            return explicit if explicit is not None else self.app.backend
        shared = self._shared_backend
        if shared is None:
            shared = self._shared_backend = self.app.backend
        return shared

    @backend.setter
    def backend(self, value: Any) -> None:
        self._explicit_backend = value


def task(name: str, *, soft_time_limit: int, time_limit: int, idempotent: bool, ignore_result: bool = True,
         max_retries: int | None = None, retry_on_db_outage: bool | None = None,
         **options: Any) -> Callable[[Callable[..., Any]], Any]:
    queue = queue_for(name)
    if time_limit <= soft_time_limit:
        raise ValueError(f"{name}: time_limit must exceed soft_time_limit")
    if retry_on_db_outage is None:
        retry_on_db_outage = idempotent and not name.startswith("workers.executions.")
    if retry_on_db_outage:
        if not idempotent:
            raise ValueError(f"{name}: only an idempotent task may be retried after a database outage")
        options.setdefault("autoretry_for", OUTAGE_ERRORS)  # the database cannot serve now
        options.setdefault("retry_backoff", 1)
        options.setdefault("retry_backoff_max", DB_RETRY_BACKOFF_MAX_S)
        options.setdefault("retry_jitter", True)
        if max_retries is None:
            max_retries = DB_RETRIES  # (None would mean: retry for ever)

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return shared_task(
            base=WardenTask, name=name, queue=queue, soft_time_limit=soft_time_limit, time_limit=time_limit,
            acks_late=idempotent, reject_on_worker_lost=idempotent, ignore_result=ignore_result,
            max_retries=max_retries, **options,
        )(run)

    return decorate
