"""Running the intent pipeline on the ``compiler`` queue and waiting for the answer, bounded.

The API never compiles inline (DESIGN §1). It publishes ``workers.compiler.compile_batch`` with a
private reply list and waits on it with BLPOP for at most ``Settings.compile_timeout_s``. The
message expires at the same moment, so a worker that appears later does not do stale work.
Broker unreachable, Redis unreachable, or no worker answering in time → 503, never a hang.

Concurrent requests of one API process are grouped (:class:`shared.groupcommit.GroupWriter`): a
request that finds no compile in flight is sent at once, alone; requests that arrive while one
is in flight go together in the next message, with one guardrails lookup for all of them. A
compile is ~0.1 ms of CPU and the Celery round trip (publish, delivery, ack, reply) some twenty
times that, so under load this is what decides dry-run latency.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from kombu.exceptions import KombuError

from api.services import Services
from shared.db import loads_json
from shared.errors import ServiceUnavailable
from shared.store import guardrails as guardrails_store

log = logging.getLogger(__name__)

COMPILE_TASK = "workers.compiler.compile_batch"
_BLPOP_SLICE_S = 5.0  # below the Redis client's socket timeout (10 s), so a long wait is several calls
# Publishing: one quick retry for a broker blip, then give up (the client gets a 503 at once).
_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def _unavailable(message: str) -> ServiceUnavailable:
    return ServiceUnavailable(message, code="compiler_unavailable", retry_after=1)


def _no_answer(timeout: float) -> ServiceUnavailable:
    return _unavailable(f"No compiler worker answered within {timeout:g} s; "
                        "is a worker consuming the 'compiler' queue?")


def compile_remote(svc: Services, request: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The worker's answer for ``request`` (which names its ``workspace_id``), compiled under the
    workspace's current guardrails: ``({"ok": True, "compiled": …} or {"ok": False, "error": …},
    guardrails revision)``. Waits at most ``Settings.compile_timeout_s``; 503 past that."""
    return svc.compiles.submit((request, time.monotonic() + svc.settings.compile_timeout_s))


def compile_many(svc: Services, items: list[tuple[dict[str, Any], float]]) -> list[tuple[dict[str, Any], int]]:
    """One message for the requests, one wait for all their answers (GroupWriter's write). Each
    request came with its own deadline (arrival + the timeout; it may have queued behind the
    group before): the group waits until the earliest, so no request waits past its own."""
    timeout = svc.settings.compile_timeout_s
    deadline = min(d for _, d in items)
    if deadline - time.monotonic() <= 0:
        raise _no_answer(timeout)
    if not svc.redis.answering:  # hung or gone: answer now rather than wait on a dead socket
        raise _unavailable("Redis does not answer (the compiler is reached through it); retry shortly")
    requests = [r for r, _ in items]
    revisions = guardrails_store.current_revisions(svc.db, {r["workspace_id"] for r in requests})
    batch = [{**r, "guardrails_revision": revisions.get(r["workspace_id"], 0)} for r in requests]
    reply_to = f"warden:compile:reply:{uuid.uuid4().hex}"
    try:
        # ignore_result=True: we wait on the reply list, so the result backend's pub/sub consumer
        # (shared by every thread of the process, not thread-safe: celery#3761, #6335) stays out of it.
        # argsrepr/kwargsrepr: a short fixed label instead of Celery's repr of the request, which
        # costs CPU per call and would copy users' intents into the monitoring event stream.
        svc.celery.send_task(COMPILE_TASK, kwargs={"requests": batch, "reply_to": reply_to},
                             expires=max(0.01, deadline - time.monotonic()), retry=True,
                             retry_policy=_RETRY_POLICY, ignore_result=True,
                             argsrepr="()", kwargsrepr=f"{{'requests': [{len(batch)} …]}}")
    except (KombuError, redis.RedisError, OSError) as exc:
        log.warning("compiler queue unreachable: %s", exc)
        raise _unavailable("The compiler queue is unreachable (message broker down); retry shortly") from None
    client = svc.redis.client
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _no_answer(timeout)
        try:
            item = client.blpop([reply_to], timeout=max(0.01, min(remaining, _BLPOP_SLICE_S)))
        except redis.RedisError as exc:
            log.warning("waiting for the compiler failed: %s", exc)
            raise _unavailable("Could not wait for the compiler (Redis unreachable); retry shortly") from None
        if item is not None:
            answers = loads_json(item[1])
            if not isinstance(answers, list) or len(answers) != len(batch):
                raise RuntimeError(f"compiler answered {type(answers).__name__} for {len(batch)} requests")
            return [(a, b["guardrails_revision"]) for a, b in zip(answers, batch, strict=True)]
