"""The project's one task decorator (after Sentry's ``instrumented_task``).

Every task states its queue and time limits explicitly, ignores results unless asked, binds
log context, and opts into ``acks_late`` + ``reject_on_worker_lost`` only when it is idempotent
(safe to run twice): then a worker killed mid-task loses nothing, the message is redelivered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery import shared_task

from shared.celery_app import queue_for


def task(name: str, *, soft_time_limit: int, time_limit: int, idempotent: bool, ignore_result: bool = True,
         max_retries: int | None = None, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    queue = queue_for(name)
    if time_limit <= soft_time_limit:
        raise ValueError(f"{name}: time_limit must exceed soft_time_limit")

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return shared_task(
            name=name, queue=queue, soft_time_limit=soft_time_limit, time_limit=time_limit,
            acks_late=idempotent, reject_on_worker_lost=idempotent, ignore_result=ignore_result,
            max_retries=max_retries, **options,
        )(run)

    return decorate
