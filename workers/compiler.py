"""Intent compilation (queue ``compiler``).

``workers.compiler.compile_batch`` runs the pure pipeline for a group of requests (the API groups
concurrent ones: api/compile_client.py) and answers with data, never an exception the caller must
decode: one JSON array of ``{"ok": true, "compiled": {...}}`` or ``{"ok": false, "error": {"code",
"message", "trace"}}``, pushed to the Redis list named in ``reply_to``. The API waits there with
BLPOP (one connection per waiting group, safe under threads and gevent, unlike the result
backend's shared pub/sub consumer) and sends with ``ignore_result=True``.

``workers.compiler.compile`` is the one-request form an API of the previous release sends; it is
kept so that a rolling deploy loses no dry run. It keeps ``ignore_result=False``, so a direct
caller (``compile_request.delay(...).get()``) reads its answer from the result backend too.

Nothing is written to PostgreSQL here: the API persists what it receives, in one transaction.
A repeat of the same message computes the same answer (the pipeline is deterministic).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from compiler import CompileError, compile_intent
from shared.db import dumps_json
from shared.netsafe import check_url_literal
from shared.store import guardrails as guardrails_store
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)

REPLY_TTL_S = 60
_docs: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
_DOC_CACHE = 256


def _guardrails(workspace_id: str | None, revision: int) -> dict[str, Any] | None:
    """The document for a workspace revision (0: the shipped default). Revisions are immutable,
    so a process may keep them."""
    if not revision or workspace_id is None:
        return None
    key = (workspace_id, revision)
    doc = _docs.get(key)
    if doc is None:
        row = guardrails_store.get_revision(runtime.db(), workspace_id, revision)
        if row is None:
            raise LookupError(f"guardrails revision {revision} of {workspace_id} not found")
        doc = row.document
        _docs[key] = doc
        while len(_docs) > _DOC_CACHE:
            _docs.popitem(last=False)
    return doc


def run_pipeline(request: dict[str, Any]) -> dict[str, Any]:
    """The compile answer for one request (pure apart from the guardrails lookup)."""
    allow_private = bool(request.get("allow_private_webhooks"))

    def endpoint_check(url: str) -> str | None:
        return check_url_literal(url, allow_private=allow_private)

    try:
        compiled = compile_intent(
            request["intent"], request["entity_scope"], request["delivery"], request.get("constraints"),
            _guardrails(request.get("workspace_id"), int(request.get("guardrails_revision") or 0)),
            endpoint_check=endpoint_check,
        )
    except CompileError as exc:
        return {"ok": False, "error": exc.to_dict()}
    except (ValueError, TypeError) as exc:  # malformed constraints the schema let through
        return {"ok": False, "error": {"code": "invalid_request", "message": str(exc), "trace": []}}
    return {"ok": True, "compiled": compiled.to_dict()}


def _reply(reply_to: str | None, answer: Any) -> None:
    if not reply_to:
        return
    client = runtime.redis().client
    with client.pipeline(transaction=False) as pipe:  # one round trip; nobody else writes this list
        pipe.rpush(reply_to, dumps_json(answer))
        pipe.expire(reply_to, REPLY_TTL_S)
        pipe.execute()


_INTERNAL = {"ok": False, "error": {"code": "internal_error", "message": "The compiler failed unexpectedly",
                                    "trace": []}}


# send_events=False: a compile is a ~0.1 ms RPC at API request rate; three monitoring events per
# call (received/started/succeeded) would cost more than the work. Failures are still logged.
@task("workers.compiler.compile", soft_time_limit=20, time_limit=30, idempotent=True, ignore_result=False,
      send_events=False)
def compile_request(request: dict[str, Any], reply_to: str | None = None) -> dict[str, Any]:
    """Compile one intent and push the answer to ``reply_to``. An unexpected failure is answered
    as ``internal_error`` (so the caller does not wait for its timeout) and then re-raised."""
    try:
        answer = run_pipeline(request)
    except Exception:
        log.exception("compile failed unexpectedly")
        _reply(reply_to, _INTERNAL)
        raise
    _reply(reply_to, answer)
    return answer


@task("workers.compiler.compile_batch", soft_time_limit=20, time_limit=30, idempotent=True, send_events=False)
def compile_batch(requests: list[dict[str, Any]], reply_to: str) -> None:
    """Compile several intents (concurrent API requests of one process, grouped: see
    api/compile_client.py) and push one JSON array of answers, in order, to ``reply_to``. One
    message, one delivery and one reply for the group instead of one each: the Celery round trip
    costs some twenty times the compile. A request that fails unexpectedly is answered
    ``internal_error`` alone."""
    answers = []
    for request in requests:
        try:
            answers.append(run_pipeline(request))
        except Exception:
            log.exception("compile failed unexpectedly")
            answers.append(_INTERNAL)
    _reply(reply_to, answers)
