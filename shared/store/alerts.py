"""Alerts and their delivery: firing (alert + task trigger metadata + delivery outbox row, in the
caller's transaction), webhook deliveries with their attempts, and bindings disabled by a 410."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Json
from shared.ids import new_id

DELIVER_TASK = "workers.delivery.alert"
WEBHOOK_TASK = "workers.delivery.alert_webhook"

_ALERT_COLUMNS = (
    "id, workspace_id, task_id, condition_id, condition_version, action_id, action_version, entity, metric,"
    " evaluated_at, evidence, delivery_type, delivery_status, delivery_detail, fired_at, updated_at"
)


@dataclass(frozen=True)
class Alert:
    id: str
    workspace_id: str
    task_id: str
    condition_id: str
    condition_version: str
    action_id: str
    action_version: str
    entity: str
    metric: str
    evaluated_at: datetime
    evidence: dict[str, Any]
    delivery_type: str
    delivery_status: str
    delivery_detail: dict[str, Any]
    fired_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Fire:
    workspace_id: str
    task_id: str
    condition_id: str
    condition_version: str
    action_id: str
    action_version: str
    entity: str
    metric: str
    evaluated_at: datetime
    evidence: dict[str, Any]


# The task row is locked and must still be active: a Task paused or deleted meanwhile never fires.
# The unique (task, condition version, evaluation time) makes a repeated fire a no-op.
_FIRE = """
WITH t AS (SELECT id FROM tasks WHERE id = %(task_id)s AND status = 'active' FOR UPDATE),
a AS (
  INSERT INTO alerts (id, workspace_id, task_id, condition_id, condition_version, action_id, action_version,
                      entity, metric, evaluated_at, evidence, delivery_type)
  SELECT %(id)s, %(ws)s, t.id, %(cond)s, %(cv)s, %(act)s, %(av)s, %(entity)s, %(metric)s, %(at)s, %(evidence)s,
         coalesce((SELECT binding->>'type' FROM actions WHERE id = %(act)s AND version = %(av)s), 'unknown')
    FROM t
  ON CONFLICT DO NOTHING RETURNING id, task_id
), u AS (
  UPDATE tasks SET last_triggered_at = now(), trigger_count = trigger_count + 1
   WHERE id IN (SELECT task_id FROM a)
), o AS (
  INSERT INTO outbox (task_name, args, queue) SELECT %(deliver)s, jsonb_build_array(id), 'delivery' FROM a
)
SELECT id FROM a
"""


def fire(cur: Any, f: Fire) -> str | None:
    """Record one alert and enqueue its delivery; None when the task is no longer active or
    this transition was already recorded."""
    cur.execute(_FIRE, {
        "task_id": f.task_id, "id": new_id("alert"), "ws": f.workspace_id, "cond": f.condition_id,
        "cv": f.condition_version, "act": f.action_id, "av": f.action_version, "entity": f.entity,
        "metric": f.metric, "at": f.evaluated_at, "evidence": Json(f.evidence), "deliver": DELIVER_TASK,
    })
    row = cur.fetchone()
    return row["id"] if row else None


# The same, for many fires in one statement (the fires of one evaluation, all in one workspace):
# every task locked in id order, one alert per (task, condition version, evaluation time), each
# task's trigger count raised by the alerts it got, one delivery outbox row per alert.
_FIRE_MANY = """
WITH f AS (
  SELECT * FROM unnest(%(id)s::text[], %(task)s::text[], %(cond)s::text[], %(cv)s::text[], %(act)s::text[],
                       %(av)s::text[], %(entity)s::text[], %(metric)s::text[], %(at)s::timestamptz[],
                       %(evidence)s::jsonb[]) WITH ORDINALITY
    AS f(id, task_id, cond, cv, act, av, entity, metric, at, evidence, n)
), t AS (SELECT id FROM tasks WHERE id IN (SELECT task_id FROM f) AND status = 'active' ORDER BY id FOR UPDATE),
a AS (
  INSERT INTO alerts (id, workspace_id, task_id, condition_id, condition_version, action_id, action_version,
                      entity, metric, evaluated_at, evidence, delivery_type)
  SELECT f.id, %(ws)s, f.task_id, f.cond, f.cv, f.act, f.av, f.entity, f.metric, f.at, f.evidence,
         coalesce((SELECT binding->>'type' FROM actions WHERE id = f.act AND version = f.av), 'unknown')
    FROM f JOIN t ON t.id = f.task_id ORDER BY f.n
  ON CONFLICT DO NOTHING RETURNING id, task_id
), u AS (
  UPDATE tasks SET last_triggered_at = now(), trigger_count = trigger_count + c.n
    FROM (SELECT task_id, count(*) AS n FROM a GROUP BY task_id) c WHERE tasks.id = c.task_id
), o AS (
  INSERT INTO outbox (task_name, args, queue) SELECT %(deliver)s, jsonb_build_array(id), 'delivery' FROM a
)
SELECT id FROM a
"""


def fire_many(cur: Any, fires: list[Fire]) -> list[str]:
    """``fire`` for many fires of one workspace in one statement; returns the new alert ids."""
    if not fires:
        return []
    if len(fires) == 1:
        one = fire(cur, fires[0])
        return [one] if one else []
    assert len({f.workspace_id for f in fires}) == 1
    cur.execute(_FIRE_MANY, {
        "id": [new_id("alert") for _ in fires], "task": [f.task_id for f in fires],
        "cond": [f.condition_id for f in fires], "cv": [f.condition_version for f in fires],
        "act": [f.action_id for f in fires], "av": [f.action_version for f in fires],
        "entity": [f.entity for f in fires], "metric": [f.metric for f in fires],
        "at": [f.evaluated_at for f in fires], "evidence": [Json(f.evidence) for f in fires],
        "ws": fires[0].workspace_id, "deliver": DELIVER_TASK,
    })
    return [r["id"] for r in cur.fetchall()]


def get(cur: Any, alert_id: str, *, lock: bool = False) -> Alert | None:
    cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                (alert_id,))
    row = cur.fetchone()
    return Alert(**row) if row else None


def to_json(a: Alert) -> dict[str, Any]:
    """The public shape of an alert (API responses and webhook payloads)."""
    return {
        "alert_id": a.id, "task_id": a.task_id, "condition_id": a.condition_id,
        "condition_version": a.condition_version, "action_id": a.action_id, "action_version": a.action_version,
        "entity": a.entity, "metric": a.metric, "evaluated_at": a.evaluated_at.isoformat(),
        "fired_at": a.fired_at.isoformat(), "evidence": a.evidence,
        "delivery": {"type": a.delivery_type, "status": a.delivery_status, **a.delivery_detail},
    }


def binding(cur: Any, alert: Alert) -> dict[str, Any] | None:
    cur.execute("SELECT binding FROM actions WHERE id = %s AND version = %s", (alert.action_id, alert.action_version))
    row = cur.fetchone()
    return row["binding"] if row else None


def set_delivery(cur: Any, alert_id: str, status: str, detail: dict[str, Any]) -> None:
    cur.execute("UPDATE alerts SET delivery_status = %s, delivery_detail = delivery_detail || %s, updated_at = now()"
                " WHERE id = %s", (status, Json(detail), alert_id))


def list_for_task(db: Database, workspace_id: str, task_id: str, *, after_id: str | None,
                  limit: int) -> tuple[list[dict[str, Any]], bool, int] | None:
    """Newest first, as JSON, each webhook alert with its attempts, whether more follow and the
    task's alert count; None when no such task."""
    cols = ", ".join("a." + c.strip() for c in _ALERT_COLUMNS.split(","))
    with db.transaction() as cur:
        cur.execute("SELECT 1 FROM tasks WHERE id = %s AND workspace_id = %s", (task_id, workspace_id))
        if cur.fetchone() is None:
            return None
        cur.execute("SELECT count(*) AS n FROM alerts WHERE task_id = %s AND workspace_id = %s",
                    (task_id, workspace_id))
        total = int(cur.fetchone()["n"])
        cur.execute(f"SELECT {cols}, d.id AS d_id, d.next_attempt_at AS d_next FROM alerts a"
                    " LEFT JOIN alert_deliveries d ON d.alert_id = a.id"
                    " WHERE a.task_id = %s AND a.workspace_id = %s" + (" AND a.id < %s" if after_id else "") +
                    " ORDER BY a.id DESC LIMIT %s",
                    [task_id, workspace_id, *([after_id] if after_id else []), limit + 1])
        rows = cur.fetchall()[:limit + 1]
        page = rows[:limit]
        tried: dict[str, list[dict[str, Any]]] = {}
        ids = [r["d_id"] for r in page if r["d_id"]]
        if ids:
            cur.execute("SELECT delivery_id, attempt, status_code, error, duration_ms, at"
                        " FROM alert_delivery_attempts WHERE delivery_id = ANY(%s) ORDER BY delivery_id, attempt",
                        (ids,))
            for a in cur.fetchall():
                tried.setdefault(a.pop("delivery_id"), []).append({**a, "at": a["at"].isoformat()})
    items = []
    for r in page:
        d_id, d_next = r.pop("d_id"), r.pop("d_next")
        item = to_json(Alert(**r))
        if d_id:
            item["delivery"]["attempts"] = tried.get(d_id, [])
            if item["delivery"]["status"] == "pending":
                item["delivery"]["next_attempt_at"] = d_next.isoformat()
        items.append(item)
    return items, len(rows) > limit, total


# ---- webhook deliveries -------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    id: str
    alert_id: str
    workspace_id: str
    url: str
    webhook_id: str
    status: str
    attempt_count: int
    next_attempt_at: datetime
    give_up_at: datetime
    last_error: str | None


_DELIVERY_COLUMNS = ("id, alert_id, workspace_id, url, webhook_id, status, attempt_count, next_attempt_at,"
                     " give_up_at, last_error")


def create_delivery(cur: Any, alert: Alert, url: str, horizon_s: float) -> str:
    """The alert's one webhook delivery (created once; a repeat returns the existing id). The
    webhook-id is the alert id: stable across every retry of this message."""
    cur.execute("INSERT INTO alert_deliveries (id, alert_id, workspace_id, url, webhook_id, give_up_at)"
                " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
                " ON CONFLICT (alert_id) DO NOTHING",
                (new_id("dlv"), alert.id, alert.workspace_id, url, alert.id, horizon_s))
    cur.execute("SELECT id FROM alert_deliveries WHERE alert_id = %s", (alert.id,))
    return str(cur.fetchone()["id"])


def lock_delivery(cur: Any, delivery_id: str) -> tuple[Delivery, str, bool] | None:
    """The delivery, its workspace secret and whether its next attempt is due (by the database
    clock, one second of slack), locked; None when another attempt holds it."""
    cur.execute(f"SELECT {', '.join('d.' + c.strip() for c in _DELIVERY_COLUMNS.split(','))}, w.webhook_secret,"
                " d.next_attempt_at <= now() + interval '1 second' AS due"
                " FROM alert_deliveries d JOIN workspaces w ON w.id = d.workspace_id"
                " WHERE d.id = %s FOR UPDATE OF d SKIP LOCKED", (delivery_id,))
    row = cur.fetchone()
    if row is None:
        return None
    secret, due = row.pop("webhook_secret"), row.pop("due")
    return Delivery(**row), secret, bool(due)


def record_attempt(cur: Any, d: Delivery, attempt: int, status_code: int | None, error: str | None,
                   duration_ms: int, *, new_status: str, retry_in_s: float | None) -> None:
    cur.execute("INSERT INTO alert_delivery_attempts (delivery_id, attempt, status_code, error, duration_ms)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (d.id, attempt, status_code, error, duration_ms))
    cur.execute("UPDATE alert_deliveries SET attempt_count = %s, status = %s, last_error = %s,"
                " next_attempt_at = now() + make_interval(secs => %s),"
                " delivered_at = CASE WHEN %s = 'delivered' THEN now() END, updated_at = now() WHERE id = %s",
                (attempt, new_status, error, retry_in_s or 0.0, new_status, d.id))


def attempts(cur: Any, delivery_id: str) -> list[dict[str, Any]]:
    cur.execute("SELECT attempt, status_code, error, duration_ms, at FROM alert_delivery_attempts"
                " WHERE delivery_id = %s ORDER BY attempt", (delivery_id,))
    return list(cur.fetchall())


def due_deliveries(cur: Any, *, grace_s: float, limit: int = 500) -> list[str]:
    """Pending deliveries whose retry time passed more than ``grace_s`` ago (the sweeper
    re-publishes them; short retries are published with a countdown and need no sweep)."""
    cur.execute("SELECT id FROM alert_deliveries WHERE status = 'pending'"
                " AND next_attempt_at <= now() - make_interval(secs => %s)"
                " ORDER BY next_attempt_at LIMIT %s", (grace_s, limit))
    return [r["id"] for r in cur.fetchall()]


def enqueue_webhooks(cur: Any, delivery_ids: list[str]) -> None:
    cur.execute("INSERT INTO outbox (task_name, args, queue)"
                " SELECT %s, jsonb_build_array(i), 'delivery' FROM unnest(%s::text[]) AS i",
                (WEBHOOK_TASK, delivery_ids))


# ---- bindings disabled by 410 Gone --------------------------------------------------------

def binding_disabled(cur: Any, action_id: str, action_version: str) -> bool:
    cur.execute("SELECT 1 FROM disabled_bindings WHERE action_id = %s AND action_version = %s",
                (action_id, action_version))
    return cur.fetchone() is not None


def disable_binding(cur: Any, alert: Alert, reason: str) -> None:
    cur.execute("INSERT INTO disabled_bindings (action_id, action_version, workspace_id, reason)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (alert.action_id, alert.action_version, alert.workspace_id, reason))
