"""Signals and their evaluation bookkeeping: batch ingest (one statement, with its outbox row),
series heads, window reads, the active tasks watching a series, and transition state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from shared.db import Json

EVALUATE_TASK = "workers.evaluation.evaluate"

# One round trip: the batch (duplicates ignored) and the outbox row that announces it. The outbox
# row names the batch's (entity, metric) groups, each with the batch's newest ts in that series
# (so a message an earlier evaluation covered is recognised from the heads alone); evaluation
# reads the signals back from the table.
_INGEST = """
WITH ins AS (
  INSERT INTO signals (workspace_id, entity, metric, ts, value)
  SELECT %(ws)s, u.e, u.m, u.t, u.v
    FROM unnest(%(e)s::text[], %(m)s::text[], %(t)s::timestamptz[], %(v)s::float8[]) AS u(e, m, t, v)
  ON CONFLICT DO NOTHING
  RETURNING 1
), o AS (
  INSERT INTO outbox (task_name, args, queue) VALUES (%(task)s, %(args)s, 'evaluation') RETURNING id
)
SELECT (SELECT count(*) FROM ins) AS stored, (SELECT id FROM o) AS outbox_id
"""


def ingest(cur: Any, workspace_id: str, items: Sequence[tuple[str, str, datetime, float]]) -> int:
    """Store a batch and enqueue its evaluation; returns how many rows were new."""
    newest: dict[tuple[str, str], datetime] = {}
    for e, m, t, _ in items:
        seen = newest.get((e, m))
        if seen is None or t > seen:
            newest[(e, m)] = t
    cur.execute(_INGEST, {
        "ws": workspace_id, "e": [i[0] for i in items], "m": [i[1] for i in items],
        "t": [i[2] for i in items], "v": [i[3] for i in items], "task": EVALUATE_TASK,
        "args": Json([workspace_id, [[e, m, newest[(e, m)].isoformat()] for e, m in sorted(newest)]]),
    })
    return int(cur.fetchone()["stored"])


def lock_series(cur: Any, workspace_id: str, groups: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """Create missing heads and lock them all, in one sorted order (no deadlock between two
    evaluations of overlapping batches). Returns {(entity, metric): evaluated_ts or None}."""
    es, ms = [g[0] for g in groups], [g[1] for g in groups]
    cur.execute("INSERT INTO signal_series (workspace_id, entity, metric)"
                " SELECT %s, e, m FROM unnest(%s::text[], %s::text[]) AS u(e, m) ORDER BY e, m"
                " ON CONFLICT DO NOTHING", (workspace_id, es, ms))
    cur.execute("SELECT entity, metric, evaluated_ts FROM signal_series"
                " WHERE workspace_id = %s AND (entity, metric) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                " ORDER BY entity, metric FOR UPDATE", (workspace_id, es, ms))
    return {(r["entity"], r["metric"]): r["evaluated_ts"] for r in cur.fetchall()}


def with_news(cur: Any, workspace_id: str, heads: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
    """The series with a stored signal newer than their head (the rest have nothing to evaluate:
    a redelivered message, or a batch an earlier evaluation already covered). One index probe
    per series (LATERAL … LIMIT 1), never a scan of the workspace's signals."""
    keys = sorted(heads)
    rows = _rows(
        cur,
        "SELECT g.e, g.m FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS g(e, m, h)"
        " CROSS JOIN LATERAL (SELECT 1 FROM signals s WHERE s.workspace_id = %s AND s.entity = g.e"
        " AND s.metric = g.m AND s.ts > coalesce(g.h, '-infinity') LIMIT 1) x",
        ([k[0] for k in keys], [k[1] for k in keys], [heads[k] for k in keys], workspace_id))
    return [(e, m) for e, m in rows]


def unevaluated(cur: Any, workspace_id: str, groups: Sequence[Sequence[Any]],
                seen: dict[tuple[str, str], datetime] | None = None) -> list[tuple[str, str]]:
    """Without locking: the series that may have something to evaluate. A group given as
    ``(entity, metric, ts)`` (the newest ts its batch stored in that series) is listed when the
    committed head is before ``ts`` (or missing): at or after it, every signal of the batch in
    that series is covered (already an evaluation time, or late). A group given as ``(entity,
    metric)`` is listed when any stored signal is newer than its head. A series not listed has
    nothing to evaluate for this message, so a covered message need not wait for the lock of an
    evaluation in progress. Listed series are locked and checked again. ``seen`` receives the
    committed heads read for timed groups."""
    timed = [g for g in groups if len(g) > 2]
    bare = [g for g in groups if len(g) <= 2]
    out: set[tuple[str, str]] = set()
    if timed:
        for e, m, head, new in _rows(
                cur,
                "SELECT g.e, g.m, h.evaluated_ts, h.evaluated_ts IS NULL OR h.evaluated_ts < g.t"
                " FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS g(e, m, t)"
                " LEFT JOIN signal_series h ON h.workspace_id = %s AND h.entity = g.e AND h.metric = g.m",
                ([g[0] for g in timed], [g[1] for g in timed], [g[2] for g in timed], workspace_id)):
            if new:
                out.add((e, m))
            if seen is not None and head is not None:
                seen[(e, m)] = head
    if bare:
        out.update(_rows(
            cur,
            "SELECT g.e, g.m FROM unnest(%s::text[], %s::text[]) AS g(e, m)"
            " LEFT JOIN signal_series h ON h.workspace_id = %s AND h.entity = g.e AND h.metric = g.m"
            " CROSS JOIN LATERAL (SELECT 1 FROM signals s WHERE s.workspace_id = %s AND s.entity = g.e"
            " AND s.metric = g.m AND s.ts > coalesce(h.evaluated_ts, '-infinity') LIMIT 1) x",
            ([g[0] for g in bare], [g[1] for g in bare], workspace_id, workspace_id)))
    return sorted(out)


def advance_heads(cur: Any, workspace_id: str, heads: dict[tuple[str, str], datetime]) -> None:
    """Set the evaluation head of series whose newest signal was evaluated."""
    if not heads:
        return
    keys = list(heads)
    cur.execute("UPDATE signal_series s SET evaluated_ts = u.t, updated_at = now()"
                " FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS u(e, m, t)"
                " WHERE s.workspace_id = %s AND s.entity = u.e AND s.metric = u.m",
                ([k[0] for k in keys], [k[1] for k in keys], [heads[k] for k in keys], workspace_id))


def advance_to_newest(cur: Any, workspace_id: str, groups: Sequence[tuple[str, str]]) -> None:
    """Series nobody watches: move their heads to the newest stored signal (a Task created
    later starts from there rather than firing on history)."""
    if not groups:
        return
    cur.execute("UPDATE signal_series s SET updated_at = now(), evaluated_ts ="
                " (SELECT max(ts) FROM signals x WHERE x.workspace_id = s.workspace_id AND x.entity = s.entity"
                "  AND x.metric = s.metric)"
                " FROM unnest(%s::text[], %s::text[]) AS u(e, m)"
                " WHERE s.workspace_id = %s AND s.entity = u.e AND s.metric = u.m",
                ([g[0] for g in groups], [g[1] for g in groups], workspace_id))


Series = tuple[list[tuple[float, float]], list[datetime]]


def _rows(cur: Any, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """Run a read on a plain cursor of ``cur``'s connection (same transaction): rows as tuples.
    Building a dict per row costs more than evaluating it when a batch reads thousands."""
    with cur.connection.cursor() as raw:
        raw.execute(sql, params)
        return raw.fetchall()  # type: ignore[no-any-return]


def _series(keys: Sequence[tuple[str, str]], rows: Iterable[Any]) -> dict[tuple[str, str], Series]:
    """Rows ``(entity, metric, ts, epoch, value)`` in order → per series ``(points, stamps)``."""
    out: dict[tuple[str, str], Series] = {k: ([], []) for k in keys}
    for e, m, ts, t, value in rows:
        points, stamps = out[(e, m)]
        points.append((t, value))
        stamps.append(ts)
    return out


def read_series(cur: Any, workspace_id: str, bounds: dict[tuple[str, str], datetime | None],
                upto: datetime | None = None) -> dict[tuple[str, str], Series]:
    """Per series: the points after its bound plus the last point at or before it (the change
    strategy's reference), sorted by ts, as ([(epoch seconds, value)], [ts]). A None bound reads
    everything; ``upto`` caps the newest ts read."""
    if not bounds:
        return {}
    keys = list(bounds)
    rows = _rows(
        cur,
        "SELECT g.e, g.m, s.ts, extract(epoch FROM s.ts)::float8 AS t, s.value FROM"
        " unnest(%(e)s::text[], %(m)s::text[], %(lo)s::timestamptz[]) AS g(e, m, lo)"
        " CROSS JOIN LATERAL ("
        "  (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = g.e AND metric = g.m"
        "    AND ts <= coalesce(g.lo, '-infinity') ORDER BY ts DESC LIMIT 1)"
        "  UNION ALL"
        "  (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = g.e AND metric = g.m"
        "    AND ts > coalesce(g.lo, '-infinity') AND ts <= coalesce(%(upto)s::timestamptz, 'infinity'))"
        " ) s ORDER BY g.e, g.m, s.ts",
        {"e": [k[0] for k in keys], "m": [k[1] for k in keys], "lo": [bounds[k] for k in keys],
         "ws": workspace_id, "upto": upto})
    return _series(keys, rows)


def read_edges(cur: Any, workspace_id: str, specs: Mapping[tuple[str, str], tuple[datetime, Sequence[float]]]
               ) -> dict[tuple[str, str], Series]:
    """Per series ``(head, change windows)``: only the points evaluation at every point newer than
    the head needs when its plans are threshold, absence and two-point change (see
    ``workers.evaluation.edge_windows``): the last point at or before the head and every later
    one; per window ``w`` the last point at or before ``head - w`` and those in
    ``(head - w, newest - w]``; and the series' earliest point. Same shape as ``read_series``."""
    if not specs:
        return {}
    keys = list(specs)
    wins = [(k, w) for k in keys for w in specs[k][1]]
    rows = _rows(
        cur,
        "SELECT x.e, x.m, x.ts, extract(epoch FROM x.ts)::float8 AS t, x.value FROM ("
        " SELECT g.e, g.m, s.ts, s.value FROM unnest(%(e)s::text[], %(m)s::text[], %(h)s::timestamptz[]) AS g(e, m, h)"
        " CROSS JOIN LATERAL ("
        "  (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = g.e AND metric = g.m"
        "    AND ts <= g.h ORDER BY ts DESC LIMIT 1)"
        "  UNION ALL (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = g.e AND metric = g.m"
        "    AND ts > g.h)"
        "  UNION ALL (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = g.e AND metric = g.m"
        "    ORDER BY ts LIMIT 1)"
        " ) s"
        " UNION"
        " SELECT w.e, w.m, s.ts, s.value FROM unnest(%(we)s::text[], %(wm)s::text[], %(wh)s::timestamptz[],"
        "  %(ww)s::float8[]) AS w(e, m, h, sec)"
        " CROSS JOIN LATERAL (SELECT w.h - make_interval(secs => w.sec) AS lo,"
        "  (SELECT max(ts) FROM signals WHERE workspace_id = %(ws)s AND entity = w.e AND metric = w.m)"
        "   - make_interval(secs => w.sec) AS hi) b"
        " CROSS JOIN LATERAL ("
        "  (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = w.e AND metric = w.m"
        "    AND ts <= b.lo ORDER BY ts DESC LIMIT 1)"
        "  UNION ALL (SELECT ts, value FROM signals WHERE workspace_id = %(ws)s AND entity = w.e AND metric = w.m"
        "    AND ts > b.lo AND ts <= b.hi)"
        " ) s"
        ") x ORDER BY x.e, x.m, x.ts",
        {"e": [k[0] for k in keys], "m": [k[1] for k in keys], "h": [specs[k][0] for k in keys],
         "we": [k[0] for k, _ in wins], "wm": [k[1] for k, _ in wins], "wh": [specs[k][0] for k, _ in wins],
         "ww": [float(w) for _, w in wins], "ws": workspace_id})
    return _series(keys, rows)


def last_points(cur: Any, workspace_id: str, groups: Sequence[tuple[str, str]], upto: datetime
                ) -> dict[tuple[str, str], tuple[float, float] | None]:
    """The newest stored point at or before ``upto`` of each series (None when it has none)."""
    cur.execute(
        "SELECT g.e, g.m, extract(epoch FROM s.ts)::float8 AS t, s.value FROM"
        " unnest(%s::text[], %s::text[]) AS g(e, m) LEFT JOIN LATERAL ("
        "  SELECT ts, value FROM signals WHERE workspace_id = %s AND entity = g.e AND metric = g.m"
        "  AND ts <= %s ORDER BY ts DESC LIMIT 1) s ON true",
        ([g[0] for g in groups], [g[1] for g in groups], workspace_id, upto))
    return {(r["e"], r["m"]): (None if r["t"] is None else (r["t"], r["value"])) for r in cur.fetchall()}


class Watcher(NamedTuple):
    """An active Task watching one series, with the versions it pins (a tuple: evaluation
    builds one per Task per batch, 10,000 at a time)."""

    task_id: str
    entity: str
    metric: str
    condition_id: str
    condition_version: str
    action_id: str
    action_version: str


def active_watchers(cur: Any, workspace_id: str, groups: Sequence[tuple[str, str]]) -> list[Watcher]:
    rows = _rows(
        cur,
        "SELECT t.id, t.entity_scope, t.metric, t.condition_id, t.condition_version, t.action_id,"
        " t.action_version FROM unnest(%s::text[], %s::text[]) AS g(e, m)"
        " JOIN tasks t ON t.workspace_id = %s AND t.entity_scope = g.e AND t.metric = g.m AND t.status = 'active'",
        ([g[0] for g in groups], [g[1] for g in groups], workspace_id))
    return [Watcher(*r) for r in rows]


def watchers_and_states(cur: Any, workspace_id: str, groups: Sequence[tuple[str, str]]
                        ) -> tuple[list[Watcher], set[tuple[str, str]]]:
    """``active_watchers`` and which of them are active (fired, not re-armed), in one read: the
    active ones (typically few) are then locked and confirmed by ``active_states`` instead of
    joining every watcher against the state table."""
    rows = _rows(
        cur,
        "SELECT t.id, t.entity_scope, t.metric, t.condition_id, t.condition_version, t.action_id,"
        " t.action_version, EXISTS (SELECT 1 FROM evaluation_state s WHERE s.task_id = t.id"
        "  AND s.condition_version = t.condition_version AND s.active)"
        " FROM unnest(%s::text[], %s::text[]) AS g(e, m)"
        " JOIN tasks t ON t.workspace_id = %s AND t.entity_scope = g.e AND t.metric = g.m AND t.status = 'active'",
        ([g[0] for g in groups], [g[1] for g in groups], workspace_id))
    watchers = [Watcher(*r[:7]) for r in rows]
    return watchers, active_states(cur, [(r[0], r[4]) for r in rows if r[7]])


def absence_watchers(cur: Any, limit: int = 10000) -> list[tuple[str, Watcher]]:
    """Every active Task whose pinned condition is an absence condition: (workspace_id, watcher)."""
    cur.execute(
        "SELECT t.workspace_id, t.id, t.entity_scope, t.metric, t.condition_id, t.condition_version,"
        " t.action_id, t.action_version FROM tasks t JOIN conditions c"
        " ON c.id = t.condition_id AND c.version = t.condition_version"
        " WHERE t.status = 'active' AND c.strategy = 'absence' ORDER BY t.workspace_id, t.id LIMIT %s", (limit,))
    rows = cur.fetchall()
    return [(r["workspace_id"], Watcher(r["id"], r["entity_scope"], r["metric"], r["condition_id"],
                                        r["condition_version"], r["action_id"], r["action_version"])) for r in rows]


def plans(cur: Any, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Compiled plans of condition versions (immutable: callers may cache them forever)."""
    if not keys:
        return {}
    cur.execute("SELECT c.id, c.version, c.plan FROM unnest(%s::text[], %s::text[]) AS k(i, v)"
                " JOIN conditions c ON c.id = k.i AND c.version = k.v",
                ([k[0] for k in keys], [k[1] for k in keys]))
    return {(r["id"], r["version"]): r["plan"] for r in cur.fetchall()}


def active_states(cur: Any, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (task, condition version) are currently active (fired, not yet re-armed); their
    rows are locked until commit. A missing row means armed."""
    if not keys:
        return set()
    cur.execute("SELECT s.task_id, s.condition_version FROM unnest(%s::text[], %s::text[]) AS k(t, v)"
                " JOIN evaluation_state s ON s.task_id = k.t AND s.condition_version = k.v AND s.active"
                " FOR UPDATE OF s", ([k[0] for k in keys], [k[1] for k in keys]))
    return {(r["task_id"], r["condition_version"]) for r in cur.fetchall()}


def set_states(cur: Any, changes: Sequence[tuple[str, str, bool, datetime]]) -> None:
    """Record transitions: (task_id, condition_version, active, evaluation time)."""
    if not changes:
        return
    cur.execute(
        "INSERT INTO evaluation_state (task_id, condition_version, active, last_ts)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bool[], %s::timestamptz[])"
        " ON CONFLICT (task_id, condition_version) DO UPDATE SET active = EXCLUDED.active,"
        " last_ts = EXCLUDED.last_ts, updated_at = now()",
        ([c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes], [c[3] for c in changes]))
