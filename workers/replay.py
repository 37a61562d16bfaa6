"""Replay (queue ``compiler``): when would a condition version have fired over stored signals?

``workers.compiler.replay(request, reply_to)`` walks the stored series exactly as live
evaluation does (``workers.evaluation.walk``: every signal in ``[from, to]`` is an evaluation
time, in ts order, starting armed, with the window reaching back before ``from``), so over the
same data replay and live evaluation fire at the same signal times. Absence is evaluated on
gaps: it would have fired the moment a silence reached the window (live evaluation fires at the
first absence sweep after that moment), and re-armed at the next signal.

The answer is pushed to the Redis list ``reply_to`` (the API waits on it, bounded) and kept in
the result backend. Read-only: nothing is written to PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from typing import Any

from compiler import evaluate_plan
from shared.store import conditions, signals
from workers import runtime
from workers.base import task
from workers.evaluation import evidence, walk

log = logging.getLogger(__name__)

MAX_POINTS = 500_000
MAX_FIRES = 1000
REPLY_TTL_S = 60


def _absence(plan: dict[str, Any], series: list[tuple[float, float]], start: float, end: float
             ) -> list[float]:
    window = plan["window_seconds"]
    first = bisect_left(series, start, key=lambda p: p[0])
    prev = series[first - 1][0] if first > 0 else None
    times: list[float] = []
    if prev is None or start - prev >= window:
        times.append(start)  # already silent when the range starts
        active = True
    else:
        active = False
    for t, _ in series[first:]:
        if not active and prev is not None and prev + window < t:
            times.append(prev + window)
        active, prev = False, t  # a signal re-arms it
    if not active and prev is not None and prev + window <= end:
        times.append(prev + window)
    return times


def run_replay(request: dict[str, Any]) -> dict[str, Any]:
    ws, condition_id = request["workspace_id"], request["condition_id"]
    start, end = datetime.fromisoformat(request["from"]), datetime.fromisoformat(request["to"])
    with runtime.db().transaction() as cur:
        cond = conditions.get_condition(None, ws, condition_id, request.get("version"), cur=cur)
        if cond is None:
            return {"ok": False, "error": {"code": "condition_not_found", "status": 404,
                                           "message": f"Condition {condition_id} version {request.get('version')} "
                                                      "not found"}}
        entity = request.get("entity_scope") or (cond.created_from or {}).get("entity_scope")
        if not entity:
            return {"ok": False, "error": {"code": "entity_scope_required", "status": 400,
                                           "message": "This condition has no entity scope; pass entity_scope"}}
        plan = cond.plan
        key = (entity, cond.metric)
        cur.execute("SELECT count(*) AS n FROM signals WHERE workspace_id = %s AND entity = %s AND metric = %s"
                    " AND ts > %s AND ts <= %s", (ws, entity, cond.metric,
                                                   start - timedelta(seconds=plan["window_seconds"]), end))
        if cur.fetchone()["n"] > MAX_POINTS:
            return {"ok": False, "error": {"code": "range_too_large", "status": 400,
                                           "message": f"More than {MAX_POINTS} signals in range; narrow it"}}
        series, stamps = signals.read_series(cur, ws, {key: start - timedelta(seconds=plan["window_seconds"])},
                                             upto=end)[key]
    first = bisect_left(stamps, start)
    fired: list[dict[str, Any]] = []
    if plan["strategy"] == "absence":
        for t in _absence(plan, series, start.timestamp(), end.timestamp())[:MAX_FIRES]:
            ev = evaluate_plan(plan, series, t)
            fired.append({"at": datetime.fromtimestamp(t, UTC).isoformat(),
                          "evidence": evidence(plan, series, t, ev, cond.id, cond.version)})
    else:
        hits, _, _ = walk(plan, series, first, False)
        for i, ev in hits[:MAX_FIRES]:
            fired.append({"at": stamps[i].isoformat(),
                          "evidence": evidence(plan, series, series[i][0], ev, cond.id, cond.version)})
    return {"ok": True, "result": {
        "condition_id": cond.id, "condition_version": cond.version, "entity_scope": entity, "metric": cond.metric,
        "strategy": plan["strategy"], "from": start.isoformat(), "to": end.isoformat(),
        "evaluated_points": len(stamps) - first, "fire_count": len(fired), "fired": fired}}


@task("workers.compiler.replay", soft_time_limit=60, time_limit=90, idempotent=True, ignore_result=False)
def replay(request: dict[str, Any], reply_to: str | None = None) -> dict[str, Any]:
    try:
        answer = run_replay(request)
    except Exception:
        log.exception("replay failed unexpectedly")
        answer = {"ok": False, "error": {"code": "internal_error", "status": 500,
                                         "message": "Replay failed unexpectedly"}}
    if reply_to:
        client = runtime.redis().client
        with client.pipeline(transaction=True) as pipe:
            pipe.rpush(reply_to, json.dumps(answer, separators=(",", ":")))
            pipe.expire(reply_to, REPLY_TTL_S)
            pipe.execute()
    return answer
