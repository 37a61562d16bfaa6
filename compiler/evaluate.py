"""Compiled plans and their evaluation: the hot path the ``evaluation`` workers run per signal.

A plan is plain JSON (``build_plan``)::

    {"plan_version": 1, "strategy": "change", "metric": "price",
     "params": {"direction": "increase", "value": 0.1, "window": "1d"},
     "window_seconds": 86400, "min_points": 2, "tolerance": 1e-09}

``evaluate_plan(plan, series, now)`` takes ``series`` as ``(ts_epoch_seconds, value)`` pairs sorted
ascending. Points after ``now`` are ignored. The window is the half-open interval
``(now - window_seconds, now]``. Boundaries, exactly:

* threshold — latest point in the window; ``above`` fires when ``latest >= value``, ``below`` when
  ``latest <= value`` (reaching the threshold fires). No point in the window: inactive.
* change — latest = the last point in the window (none: inactive); reference = the last point
  at or before the window start (``ts <= now - window``), or, when the series has none, the
  earliest point given. ``ratio = (latest - ref) / |ref|``;
  ``increase`` fires when ``ratio >= value``, ``decrease`` when ``ratio <= -value``, ``any`` on
  either. A zero reference or fewer than ``min_points`` points: inactive.
* anomaly — baseline = points in the window before the latest one (at least ``min_points``);
  ``z = (latest - mean) / pstdev`` (population standard deviation); fires when ``|z| >= zscore``.
  A flat baseline (pstdev 0) fires on any latest value that differs from it (z = ±inf).
* absence — fires when no point lies in the window: the last point is at or before
  ``now - window_seconds`` (a silence of exactly the window fires), or there is none.

Ratio and z comparisons allow ``tolerance`` (1e-9) so values written in decimal land on their
boundary: 100 → 110 is a 10% rise even though binary floating point makes it 0.10000000000000009.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from math import fsum, inf, sqrt
from operator import itemgetter
from typing import Any

from compiler.units import parse_window

PLAN_VERSION = 1
_ts = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Evaluation:
    active: bool
    evidence: dict[str, Any]


def build_plan(strategy: str, params: dict[str, Any], metric: str, guardrails_plan: dict[str, Any]) -> dict[str, Any]:
    """The evaluable, JSON-serialisable plan for a strategy and its filled parameters."""
    if strategy == "threshold":
        window_seconds = parse_window(guardrails_plan["threshold_lookback"])
    else:
        window_seconds = parse_window(params["window"])
    min_points = {"change": guardrails_plan["change_min_points"], "anomaly": guardrails_plan["anomaly_min_points"]}.get(
        strategy, 1
    )
    return {
        "plan_version": PLAN_VERSION,
        "strategy": strategy,
        "metric": metric,
        "params": dict(params),
        "window_seconds": window_seconds,
        "min_points": min_points,
        "tolerance": guardrails_plan["tolerance"],
    }


def _latest_index(series: Sequence[tuple[float, float]], now: float) -> int:
    """Index of the last point with ts <= now, or -1."""
    if series and series[-1][0] <= now:
        return len(series) - 1
    return bisect_right(series, now, key=_ts) - 1


def _threshold(plan: dict[str, Any], series: Sequence[tuple[float, float]], now: float) -> Evaluation:
    i = _latest_index(series, now)
    if i < 0 or series[i][0] <= now - plan["window_seconds"]:
        return Evaluation(False, {"reason": "no_data"})
    ts, latest = series[i]
    params = plan["params"]
    value = params["value"]
    active = latest >= value if params["direction"] == "above" else latest <= value
    return Evaluation(active, {"latest": latest, "latest_ts": ts, "threshold": value, "direction": params["direction"]})


def _change(plan: dict[str, Any], series: Sequence[tuple[float, float]], now: float) -> Evaluation:
    i = _latest_index(series, now)
    if i + 1 < plan["min_points"] or i < 1:
        return Evaluation(False, {"reason": "not_enough_points", "points": i + 1})
    start = now - plan["window_seconds"]
    if series[i][0] <= start:
        return Evaluation(False, {"reason": "no_data"})
    r = bisect_right(series, start, key=_ts, hi=i) - 1
    if r < 0:
        r = 0
    ref_ts, ref = series[r]
    ts, latest = series[i]
    if ref == 0:
        return Evaluation(False, {"reason": "zero_reference", "reference": ref, "reference_ts": ref_ts})
    ratio = (latest - ref) / abs(ref)
    params = plan["params"]
    value = params["value"] - plan["tolerance"]
    direction = params["direction"]
    if direction == "increase":
        active = ratio >= value
    elif direction == "decrease":
        active = ratio <= -value
    else:
        active = ratio >= value or ratio <= -value
    return Evaluation(
        active,
        {
            "latest": latest,
            "latest_ts": ts,
            "reference": ref,
            "reference_ts": ref_ts,
            "change": ratio,
            "threshold": params["value"],
            "direction": direction,
        },
    )


def _anomaly(plan: dict[str, Any], series: Sequence[tuple[float, float]], now: float) -> Evaluation:
    i = _latest_index(series, now)
    start = now - plan["window_seconds"]
    first = bisect_right(series, start, key=_ts, hi=max(i, 0))
    baseline = [v for _, v in series[first:i]] if i > 0 else []
    if len(baseline) < plan["min_points"]:
        return Evaluation(False, {"reason": "not_enough_points", "points": len(baseline)})
    ts, latest = series[i]
    n = len(baseline)
    mean = fsum(baseline) / n
    std = sqrt(fsum((v - mean) ** 2 for v in baseline) / n)
    # A flat baseline (std 0): any departure from it is infinitely unusual.
    z = (latest - mean) / std if std else (0.0 if latest == mean else (inf if latest > mean else -inf))
    zscore = plan["params"]["zscore"]
    active = abs(z) >= zscore - plan["tolerance"]
    return Evaluation(
        active,
        {
            "latest": latest,
            "latest_ts": ts,
            "mean": mean,
            "stdev": std,
            "zscore": z if z not in (inf, -inf) else ("inf" if z > 0 else "-inf"),
            "threshold": zscore,
            "baseline_points": n,
        },
    )


def _absence(plan: dict[str, Any], series: Sequence[tuple[float, float]], now: float) -> Evaluation:
    i = _latest_index(series, now)
    if i < 0:
        return Evaluation(True, {"reason": "no_data", "window_seconds": plan["window_seconds"]})
    last_ts = series[i][0]
    silent_for = now - last_ts
    return Evaluation(
        silent_for >= plan["window_seconds"],
        {"last_ts": last_ts, "silent_seconds": silent_for, "window_seconds": plan["window_seconds"]},
    )


_EVALUATORS = {"threshold": _threshold, "change": _change, "anomaly": _anomaly, "absence": _absence}


def evaluate_plan(plan: dict[str, Any], series: Sequence[tuple[float, float]], now: float) -> Evaluation:
    """Whether the condition holds at ``now`` over ``series``; see the module docstring for exact rules."""
    try:
        evaluator = _EVALUATORS[plan["strategy"]]
    except KeyError:
        raise ValueError(f"unknown plan strategy: {plan.get('strategy')!r}") from None
    return evaluator(plan, series, now)
