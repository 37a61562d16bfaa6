"""Condition evaluation (queue ``evaluation``): signals in, alerts out.

``workers.evaluation.evaluate(workspace_id, groups)`` is enqueued (through the outbox) once per
ingested batch, naming the batch's ``(entity, metric)`` series with the batch's newest ts in each.
For each series it evaluates every active Task whose ``entity_scope`` and metric match, with
the compiled plan of the Task's pinned condition version (``compiler.evaluate_plan``), and fires
on a false → true transition only; a true → false evaluation re-arms the Task. Transition state
is kept per (task, condition version), so rebinding to a new version starts armed.

**Ordering rule (late and out-of-order signals).** Evaluation reads the stored signals, never
the message: each series has an evaluation head (``signal_series.evaluated_ts``), locked while a
worker evaluates it, so one series is evaluated by one worker at a time. Every stored signal
newer than the head is an *evaluation time*, visited in ts order, and the plan is evaluated at
that time over all stored signals up to it (points after it are ignored); the head then moves to
the newest. A signal that arrives with a ts at or before the head (late) is stored and is part
of the window of every later evaluation, but it is not an evaluation time itself: it cannot
re-fire (or un-fire) a transition in the past. Batches that arrive out of order among
themselves are therefore evaluated in ts order as long as they arrive before a newer batch has
been evaluated; replay (``workers/replay.py``) applies the same walk to stored data.

**Idempotency.** A redelivered message finds the head already moved (checked before locking, so it
never waits for an evaluation in progress, and without a query when this process has already
seen a head at or after the batch's newest ts committed) and does nothing; a fire
that is somehow repeated hits the alert's unique (task, condition version, evaluation time).
The task row is locked and re-checked at fire time: paused and deleted Tasks never fire.

**Absence** cannot be seen at a signal's own time (a signal just arrived), so the beat job
``workers.evaluation.absence_sweep`` evaluates every active absence Task at wall-clock now
under the same series lock; the next signal re-arms it.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from compiler import Evaluation, evaluate_plan
from shared import outbox
from shared.store import alerts, signals
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)

MAX_EVIDENCE_POINTS = 50
_plan_cache: dict[tuple[str, str], dict[str, Any]] = {}
_PLAN_CACHE_MAX = 50_000


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def walk(plan: dict[str, Any], series: Sequence[tuple[float, float]], start: int, active: bool,
         end: int | None = None) -> tuple[list[tuple[int, Evaluation]], bool, int | None]:
    """Evaluate at each point ``series[start:end]`` in order from state ``active``. Returns the
    fires (index, evaluation), the final state and the index of the last transition."""
    fires: list[tuple[int, Evaluation]] = []
    last_change = None
    for i in range(start, len(series) if end is None else end):
        ev = evaluate_plan(plan, series, series[i][0])
        if ev.active != active:
            active = ev.active
            last_change = i
            if active:
                fires.append((i, ev))
    return fires, active, last_change


def evidence(plan: dict[str, Any], series: Sequence[tuple[float, float]], now: float, ev: Evaluation,
             condition_id: str, condition_version: str) -> dict[str, Any]:
    """What an alert records: the values in the window, the window, params and the version."""
    start = now - plan["window_seconds"]
    lo = bisect_right(series, start, key=lambda p: p[0])
    hi = bisect_right(series, now, key=lambda p: p[0])
    points = series[max(lo, hi - MAX_EVIDENCE_POINTS):hi]
    return {
        "condition_id": condition_id, "condition_version": condition_version,
        "strategy": plan["strategy"], "params": plan["params"], "metric": plan.get("metric"),
        "window": {"start": iso(start), "end": iso(now), "seconds": plan["window_seconds"]},
        "values": [{"ts": iso(t), "value": v} for t, v in points],
        "values_in_window": hi - lo, "evaluation": ev.evidence,
    }


def _plans(cur: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    missing = [k for k in keys if k not in _plan_cache]
    if missing:
        if len(_plan_cache) > _PLAN_CACHE_MAX:
            _plan_cache.clear()
        _plan_cache.update(signals.plans(cur, missing))  # versions are immutable: cache forever
    return {k: _plan_cache[k] for k in keys if k in _plan_cache}


def reach(plans: Sequence[dict[str, Any]]) -> float:
    """How far before a series' head (seconds) the points read must reach so that evaluating
    every point newer than the head gives exactly what evaluating over all stored points gives.

    The read is the points after ``head - reach`` plus the last one at or before it. At an
    evaluation time ``t`` (> head): ``threshold`` needs only the latest point at or before ``t``
    (a new point, or the last one at or before the head) and ``absence`` sees the point at ``t``
    itself, so they need no reach. ``change`` needs its reference, the last point at or before
    ``t - window`` (> head - window), so a reach of its window; its ``min_points`` counts the points
    read up to ``t``, which does not depend on the reach for ``min_points <= 2`` (the point at or
    before ``head - reach`` and ``t`` itself are two) — larger ``min_points`` keep the widest reach
    of all the plans on the series, as before. ``anomaly`` needs its whole window."""
    wide = max((p["window_seconds"] for p in plans), default=0)
    need = 0
    for p in plans:
        strategy = p["strategy"]
        if strategy in ("threshold", "absence"):
            continue
        if strategy == "anomaly" or (strategy == "change" and p.get("min_points", 1) <= 2):
            need = max(need, p["window_seconds"])
        else:
            return wide
    return need


def edge_windows(plans: Sequence[dict[str, Any]]) -> list[float] | None:
    """The change windows of a series whose plans need only window edges, else None (read the
    contiguous ``reach``). With only threshold, absence and ``change`` (``min_points <= 2``) plans,
    evaluating every point newer than the head needs: the last point at or before the head and
    every later one (threshold, absence, the latest point and the two-point count of change);
    per change window ``w``, the last point at or before ``head - w`` and every point in
    ``(head - w, newest - w]`` (each new point's reference); and the series' earliest point (the
    reference when nothing lies before the window). None when there is no change plan (the
    contiguous read from the head is already that) or an anomaly (its whole window)."""
    windows: set[float] = set()
    for p in plans:
        strategy = p["strategy"]
        if strategy in ("threshold", "absence"):
            continue
        if strategy == "change" and p.get("min_points", 1) <= 2:
            windows.add(p["window_seconds"])
        else:
            return None
    return sorted(windows) or None


def _fires(cur: Any, workspace_id: str, hits: Sequence[tuple[signals.Watcher, dict[str, Any], int, Evaluation]],
           data: dict[tuple[str, str], signals.Series], bounds: dict[tuple[str, str], datetime | None]
           ) -> list[alerts.Fire]:
    """The alerts of the fires found, with their evidence: every point of the plan's window. A
    series read with a shorter reach than a fire's window, or read by its edges, is read again
    for its evidence (fires are rare: a transition, not every evaluation)."""
    more: dict[tuple[str, str], datetime | None] = {}
    for w, plan, i, _ev in hits:
        key = (w.entity, w.metric)
        need = data[key][1][i] - timedelta(seconds=plan["window_seconds"])
        bound = bounds.get(key, need + timedelta(seconds=1))  # an edge read holds no whole window
        if bound is not None and need < bound:
            prev = more.get(key)
            more[key] = need if prev is None else min(need, prev)
    full = {**data, **signals.read_series(cur, workspace_id, more)} if more else data
    out = []
    for w, plan, i, ev in hits:
        key = (w.entity, w.metric)
        series, stamps = data[key]
        at = stamps[i]
        window = full[key][0]
        out.append(alerts.Fire(
            workspace_id, w.task_id, w.condition_id, w.condition_version, w.action_id, w.action_version,
            w.entity, w.metric, at,
            evidence(plan, window, series[i][0], ev, w.condition_id, w.condition_version)))
    return out


# Heads this process has seen committed, per (database, workspace, entity, metric). Heads only
# move forward, so a remembered head is a lower bound of the current one: a message whose every
# series has a remembered head at or after the batch's newest ts is covered without a query.
# After a burst the queue holds many such messages; this drains them at Celery's own cost.
_heads_seen: dict[tuple[str, str, str, str], datetime] = {}
_HEADS_SEEN_MAX = 200_000


def _remember(database: str, workspace_id: str, heads: dict[tuple[str, str], datetime]) -> None:
    if len(_heads_seen) + len(heads) > _HEADS_SEEN_MAX:
        _heads_seen.clear()
    for (e, m), head in heads.items():
        key = (database, workspace_id, e, m)
        old = _heads_seen.get(key)
        if old is None or head > old:
            _heads_seen[key] = head


def _covered(database: str, workspace_id: str, groups: Sequence[Sequence[Any]]) -> bool:
    if not groups:
        return False
    for g in groups:
        if len(g) <= 2:
            return False
        head = _heads_seen.get((database, workspace_id, str(g[0]), str(g[1])))
        if head is None or head < datetime.fromisoformat(str(g[2])):
            return False
    return True


def _still_new(cur: Any, workspace_id: str, groups: Sequence[Sequence[Any]],
               heads: dict[tuple[str, str], datetime | None]) -> list[tuple[str, str]]:
    """Of the locked series, those with a stored signal newer than their (now current) head. A
    group that names its batch's newest ts needs no query: that signal is stored (with the
    message, in one statement), so the series has news exactly when its head is before it."""
    newest: dict[tuple[str, str], datetime] = {}
    for g in groups:
        if len(g) > 2:
            t = datetime.fromisoformat(str(g[2]))
            key = (str(g[0]), str(g[1]))
            newest[key] = max(t, newest.get(key, t))
    keep = []
    for k, head in heads.items():
        if k in newest and (head is None or head < newest[k]):
            keep.append(k)
    rest = {k: h for k, h in heads.items() if k not in newest}
    return sorted(keep + (signals.with_news(cur, workspace_id, rest) if rest else []))


def evaluate_groups(workspace_id: str, groups: Sequence[Sequence[str]]) -> list[str]:
    """Evaluate the named series up to their newest stored signal; returns new alert ids. A group
    is ``[entity, metric]`` or ``[entity, metric, newest ts of its batch]`` (ingest sends the
    latter: a series whose committed head is already at that ts is skipped without a lock)."""
    db = runtime.db()
    fired: list[str] = []
    if _covered(db.url, workspace_id, groups):
        return fired  # covered by a head this process has seen committed: no database work at all
    seen: dict[tuple[str, str], datetime] = {}
    new_heads: dict[tuple[str, str], datetime] = {}
    with db.transaction() as cur:
        keys = signals.unevaluated(cur, workspace_id, groups, seen)
        _remember(db.url, workspace_id, seen)
        if not keys:
            return fired  # covered by an earlier evaluation (or a redelivery): no lock taken
        heads = signals.lock_series(cur, workspace_id, keys)
        keys = _still_new(cur, workspace_id, groups, heads)
        if not keys:
            return fired  # already evaluated (redelivery, or covered by an earlier message)
        watching: dict[tuple[str, str], list[signals.Watcher]] = defaultdict(list)
        found, active = signals.watchers_and_states(cur, workspace_id, keys)
        for w in found:
            watching[(w.entity, w.metric)].append(w)
        signals.advance_to_newest(cur, workspace_id, [k for k in keys if k not in watching])
        if not watching:
            return fired
        plans = _plans(cur, {(w.condition_id, w.condition_version) for ws in watching.values() for w in ws})
        bounds: dict[tuple[str, str], datetime | None] = {}
        edges: dict[tuple[str, str], tuple[datetime, list[float]]] = {}
        for key, ws in watching.items():
            head = heads.get(key)
            watched = [plans[(w.condition_id, w.condition_version)] for w in ws
                       if (w.condition_id, w.condition_version) in plans]
            windows = None if head is None else edge_windows(watched)
            if head is not None and windows is not None:
                edges[key] = (head, windows)
            else:
                bounds[key] = None if head is None else head - timedelta(seconds=reach(watched))
        data = signals.read_series(cur, workspace_id, bounds)
        data.update(signals.read_edges(cur, workspace_id, edges))
        hits: list[tuple[signals.Watcher, dict[str, Any], int, Evaluation]] = []
        changes: list[tuple[str, str, bool, datetime]] = []
        for key, ws in watching.items():
            series, stamps = data[key]
            head = heads.get(key)
            start = 0 if head is None else bisect_right(stamps, head)
            if start >= len(stamps):
                continue  # nothing newer than the head: a redelivery, or late signals only
            new_heads[key] = stamps[-1]
            for w in ws:
                plan = plans.get((w.condition_id, w.condition_version))
                if plan is None:
                    continue
                was = (w.task_id, w.condition_version) in active
                fired_at, now_active, last = walk(plan, series, start, was)
                hits.extend((w, plan, i, ev) for i, ev in fired_at)
                if now_active != was and last is not None:
                    changes.append((w.task_id, w.condition_version, now_active, stamps[last]))
        fires = _fires(cur, workspace_id, hits, data, bounds)
        signals.set_states(cur, changes)
        signals.advance_heads(cur, workspace_id, new_heads)
        fired.extend(alerts.fire_many(cur, fires))
    _remember(db.url, workspace_id, new_heads)  # committed
    if fired:
        outbox.wake(runtime.redis().client)
    return fired


def sweep_absence(now: datetime | None = None) -> list[str]:
    """Evaluate every active absence Task at ``now`` (wall clock); returns new alert ids."""
    now = now or datetime.now(UTC)
    db = runtime.db()
    with db.transaction() as cur:
        found = signals.absence_watchers(cur)
    by_ws: dict[str, list[signals.Watcher]] = defaultdict(list)
    for ws_id, w in found:
        by_ws[ws_id].append(w)
    fired: list[str] = []
    for ws_id, ws in by_ws.items():
        keys = sorted({(w.entity, w.metric) for w in ws})
        with db.transaction() as cur:
            signals.lock_series(cur, ws_id, keys)  # serialised with signal evaluation of these series
            last = signals.last_points(cur, ws_id, keys, now)
            plans = _plans(cur, {(w.condition_id, w.condition_version) for w in ws})
            active = signals.active_states(cur, [(w.task_id, w.condition_version) for w in ws])
            changes: list[tuple[str, str, bool, datetime]] = []
            for w in ws:
                plan = plans.get((w.condition_id, w.condition_version))
                if plan is None:
                    continue
                point = last.get((w.entity, w.metric))
                series = [point] if point is not None else []
                ev = evaluate_plan(plan, series, now.timestamp())
                was = (w.task_id, w.condition_version) in active
                if ev.active == was:
                    continue
                changes.append((w.task_id, w.condition_version, ev.active, now))
                if ev.active:
                    alert_id = alerts.fire(cur, alerts.Fire(
                        ws_id, w.task_id, w.condition_id, w.condition_version, w.action_id, w.action_version,
                        w.entity, w.metric, now,
                        evidence(plan, series, now.timestamp(), ev, w.condition_id, w.condition_version)))
                    if alert_id:
                        fired.append(alert_id)
            signals.set_states(cur, changes)
    if fired:
        outbox.wake(runtime.redis().client)
    return fired


@task("workers.evaluation.evaluate", soft_time_limit=60, time_limit=90, idempotent=True)
def evaluate(workspace_id: str, groups: list[list[str]]) -> int:
    return len(evaluate_groups(workspace_id, groups))


@task("workers.evaluation.absence_sweep", soft_time_limit=60, time_limit=90, idempotent=True,
      expires=30)
def absence_sweep() -> int:
    return len(sweep_absence())
