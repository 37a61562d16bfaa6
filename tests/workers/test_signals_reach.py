"""Evaluation reads only as far back as its plans need (``workers.evaluation.reach``): walking the
new points over that short read gives exactly what walking them over the old, widest read gives
(same fires at the same points with the same evaluation evidence, same final state and last
transition) for every strategy, window mix and head position."""

from __future__ import annotations

import random
from bisect import bisect_right

import pytest

from workers.evaluation import reach, walk

WINDOWS = [60, 300, 3600, 86400]


def _plan(rng: random.Random) -> dict:
    strategy = rng.choice(["threshold", "change", "anomaly", "absence"])
    window = rng.choice(WINDOWS)
    params: dict = {"threshold": {"direction": rng.choice(["above", "below"]), "value": 50.0},
                    "change": {"direction": rng.choice(["increase", "decrease", "any"]), "value": 0.1},
                    "anomaly": {"zscore": 2.0},
                    "absence": {}}[strategy]
    min_points = {"change": rng.choice([2, 2, 3]), "anomaly": 5}.get(strategy, 1)
    return {"plan_version": 1, "strategy": strategy, "metric": "m", "params": params, "window_seconds": window,
            "min_points": min_points, "tolerance": 1e-9}


def _read(points: list[tuple[float, float]], bound: float) -> list[tuple[float, float]]:
    """What ``signals.read_series`` returns for a bound: the last point at or before it, then
    every later point."""
    i = bisect_right(points, bound, key=lambda p: p[0])
    return points[max(i - 1, 0):]


def _outcome(plan: dict, series: list[tuple[float, float]], head: float, was: bool) -> tuple:
    start = bisect_right(series, head, key=lambda p: p[0])
    fires, active, last = walk(plan, series, start, was)
    return ([(series[i][0], ev.active, ev.evidence) for i, ev in fires], active,
            None if last is None else series[last][0])


@pytest.mark.parametrize("seed", range(100))
def test_short_read_evaluates_like_the_widest_read(seed):
    rng = random.Random(seed)
    t, points = 0.0, []
    for _ in range(rng.randint(1, 300)):
        t += rng.choice([1, 7, 30, 59, 60, 61, 299, 300, 900, 3600, 20000])
        points.append((t, rng.choice([0.0, 10.0, 40.0, 49.99, 50.0, 50.01, 55.0, 60.0, 100.0, rng.uniform(0, 100)])))
    head = points[rng.randrange(len(points))][0] if rng.random() < 0.9 else points[-1][0]
    plans = [_plan(rng) for _ in range(rng.randint(1, 6))]
    widest = max(p["window_seconds"] for p in plans)
    old = _read(points, head - widest)
    new = _read(points, head - reach(plans))
    assert len(new) <= len(old)
    for plan in plans:
        for was in (False, True):
            assert _outcome(plan, new, head, was) == _outcome(plan, old, head, was), plan


def test_reach_per_strategy():
    def p(strategy: str, window: int, min_points: int = 1) -> dict:
        return {"strategy": strategy, "window_seconds": window, "min_points": min_points}

    assert reach([p("threshold", 86400), p("absence", 600)]) == 0
    assert reach([p("threshold", 86400), p("change", 3600, 2)]) == 3600
    assert reach([p("anomaly", 300, 5), p("threshold", 86400)]) == 300
    assert reach([p("change", 60, 3), p("threshold", 86400)]) == 86400  # min_points > 2: the widest read


def test_evidence_has_the_whole_window_after_a_short_read(stack, client, db, workspace):
    """A threshold series is read from its head only; the alert's evidence still lists every
    point of the plan's window, including those evaluated by earlier batches."""
    import secrets

    from tests.workers.signals_helpers import alerts_of, fired_minutes, make_task, send, settled

    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    send(client, entity, "price", [(0, 100), (1, 110), (2, 120)])
    settled(db, workspace[0])
    send(client, entity, "price", [(3, 130)])
    settled(db, workspace[0])
    send(client, entity, "price", [(4, 250)])
    settled(db, workspace[0])
    got = alerts_of(client, task["task_id"])
    assert fired_minutes(got) == [4]
    ev = got[0]["evidence"]
    assert [v["value"] for v in ev["values"]] == [100, 110, 120, 130, 250]
    assert ev["values_in_window"] == 5


def _edges(points: list[tuple[float, float]], head: float, windows: list[float]) -> list[tuple[float, float]]:
    """What ``signals.read_edges`` returns (see ``workers.evaluation.edge_windows``)."""
    keep = set(_read(points, head))
    newest = points[-1][0]
    for w in windows:
        keep.update([p for p in points if p[0] <= head - w][-1:])
        keep.update(p for p in points if head - w < p[0] <= newest - w)
    keep.add(points[0])
    return sorted(keep)


@pytest.mark.parametrize("seed", range(150))
def test_edge_read_evaluates_like_the_widest_read(seed):
    from workers.evaluation import edge_windows

    rng = random.Random(seed)
    t, points = 0.0, []
    for _ in range(rng.randint(1, 300)):
        t += rng.choice([1, 7, 30, 59, 60, 61, 299, 300, 900, 3600, 20000])
        points.append((t, rng.choice([0.0, 10.0, 11.0, 9.0, 50.0, 55.0, 60.0, 100.0, rng.uniform(0, 100)])))
    head = points[rng.randrange(len(points))][0]
    plans = [_plan(rng) for _ in range(rng.randint(1, 4))]
    for p in plans:
        if p["strategy"] == "anomaly":
            p.update(strategy="change", params={"direction": "any", "value": 0.1}, min_points=2)
    windows = edge_windows(plans)
    if windows is None:
        return
    widest = max(p["window_seconds"] for p in plans)
    old = _read(points, head - widest)
    new = _edges(points, head, windows)
    for plan in plans:
        for was in (False, True):
            assert _outcome(plan, new, head, was) == _outcome(plan, old, head, was), plan


@pytest.mark.parametrize("seed", range(6))
def test_read_edges_reads_what_the_model_says(stack, db, workspace, seed):
    """``signals.read_edges`` (SQL) returns exactly the points ``_edges`` describes."""
    from datetime import UTC, datetime, timedelta

    from shared.store import signals

    rng = random.Random(seed)
    ws, entity = workspace[0], f"E{rng.random()}"
    base = datetime(2024, 5, 1, tzinfo=UTC)
    t, points = 0, []
    for _ in range(rng.randint(1, 200)):
        t += rng.choice([1, 30, 60, 61, 300, 3600])
        points.append((float(t), float(rng.randint(0, 100))))
    with db.transaction() as cur:
        signals.ingest(cur, ws, [(entity, "m", base + timedelta(seconds=p[0]), p[1]) for p in points])
    for _ in range(5):
        head = points[rng.randrange(len(points))][0]
        windows = sorted(set(rng.sample([60, 300, 3600, 86400], rng.randint(1, 3))))
        with db.transaction() as cur:
            got, _stamps = signals.read_edges(cur, ws, {(entity, "m"): (base + timedelta(seconds=head),
                                                                        [float(w) for w in windows])})[(entity, "m")]
        b = base.timestamp()
        assert [(t - b, v) for t, v in got] == _edges(points, head, windows)
