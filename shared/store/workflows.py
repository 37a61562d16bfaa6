"""Workflows: the record, its stages and events, and advancement (start ready stages, skip the
dependants of failed ones, finish the workflow), all under the workflow row lock.

``advance`` is called by the API in the creating transaction (roots start at once) and by the
``workers.workflows.advance`` task, which every stage execution's terminal transition enqueues
through the outbox (shared/store/runs.finish). It re-reads everything and is safe to run any
number of times concurrently: the ``FOR UPDATE`` on the workflow row serialises runs, and a
stage goes pending → started only with ``WHERE state = 'pending'`` (plus a unique index on
executions (workflow_id, workflow_stage)), so a stage starts exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.db import Database, Json
from shared.ids import new_id
from shared.paging import keyset_page
from shared.store import executions, runs
from shared.workflow_plan import ancestors, references, render

ADVANCE_TASK = runs.ADVANCE_TASK
STATUSES = ("running", "succeeded", "failed", "cancelled")
FAILED = frozenset({"blocked", "error", "cancelled"})
MIN_STAGE_BUDGET = 100
MAX_TASK_CHARS = 100_000
# The labels that follow the data from a stage's output into the stages that use it (the same set
# as guard.display.SENSITIVE_LABELS; shared/ imports no guard code).
CARRIED_LABELS = ("financial", "phi", "privileged")

_STAGES = """
SELECT s.workflow_id, s.name, s.position, s.depends_on, s.spec, s.state, s.execution_id, s.skip_reason,
       s.started_at, e.status AS execution_status, e.task AS execution_task, e.result, e.error,
       e.spent_cents, e.budget_cents AS execution_budget, e.finished_at,
       COALESCE(e.state->'labels', '[]'::jsonb) AS labels,
       COALESCE(e.state->'record_names', '[]'::jsonb) AS record_names
  FROM workflow_stages s LEFT JOIN executions e ON e.id = s.execution_id
 WHERE s.workflow_id = ANY(%s) ORDER BY s.workflow_id, s.position
"""


def stage_status(s: dict[str, Any]) -> str:
    """pending, skipped → cancelled, else the stage execution's status."""
    if s["state"] == "pending":
        return "pending"
    if s["state"] == "skipped":
        return "cancelled"
    return str(s["execution_status"])


@dataclass
class Advanced:
    events: list[dict[str, Any]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # execution ids (outbox rows written)
    status: str | None = None


def create(cur: Any, *, workspace_id: str, name: str | None, budget_cents: int | None,
           stages: list[dict[str, Any]]) -> tuple[str, Advanced]:
    """Insert the workflow and its stages, then start the stages with no dependencies."""
    workflow_id = new_id("wf")
    cur.execute("INSERT INTO workflows (id, workspace_id, name, status, budget_cents)"
                " VALUES (%s, %s, %s, 'running', %s)", (workflow_id, workspace_id, name, budget_cents))
    for position, s in enumerate(stages):
        spec = {k: v for k, v in s.items() if k not in ("name", "depends_on")}
        cur.execute("INSERT INTO workflow_stages (workflow_id, name, position, depends_on, spec)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (workflow_id, s["name"], position, Json(list(s["depends_on"])), Json(spec)))
    first = append_event(cur, workflow_id, "workflow.created",
                         {"stages": [{"name": s["name"], "depends_on": s["depends_on"]} for s in stages],
                          "budget_cents": budget_cents})
    result = advance(cur, workflow_id)
    result.events.insert(0, first)
    return workflow_id, result


def append_event(cur: Any, workflow_id: str, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    cur.execute("WITH s AS (UPDATE workflows SET event_count = event_count + 1, updated_at = now()"
                "            WHERE id = %s RETURNING event_count)"
                " INSERT INTO workflow_events (workflow_id, seq, type, data) SELECT %s, event_count, %s, %s FROM s"
                " RETURNING workflow_id, seq, type, at, data", (workflow_id, workflow_id, type_, Json(data)))
    row = cur.fetchone()
    return {**row, "at": row["at"].isoformat()}


def advance(cur: Any, workflow_id: str) -> Advanced:
    """Bring the workflow up to date with its stages' executions (in the caller's transaction)."""
    out = Advanced()
    cur.execute("SELECT id, workspace_id, status, budget_cents, cancel_requested FROM workflows WHERE id = %s"
                " FOR UPDATE", (workflow_id,))
    wf = cur.fetchone()
    if wf is None or wf["status"] != "running":
        return out
    cur.execute(_STAGES, ([workflow_id],))
    stages = {s["name"]: s for s in cur.fetchall()}
    _report_finished(cur, out, wf["id"], stages)
    changed = True
    while changed:  # skipping one stage can make its dependants skippable in the same pass
        changed = False
        for s in stages.values():
            if s["state"] != "pending":
                continue
            deps = {d: stage_status(stages[d]) for d in s["depends_on"]}
            failed = next(((d, st) for d, st in deps.items() if st in FAILED), None)
            if wf["cancel_requested"]:
                _skip(cur, out, wf, s, {"code": "workflow_cancelled", "message": "The workflow was cancelled"})
            elif failed:
                _skip(cur, out, wf, s, {"code": "dependency_failed", "stage": failed[0],
                                        "message": f"Stage {failed[0]!r} ended {failed[1]}"})
            elif all(st == "succeeded" for st in deps.values()):
                _start(cur, out, wf, s, stages)
            else:
                continue
            changed = True
    statuses = {name: stage_status(s) for name, s in stages.items()}
    if all(st in executions.TERMINAL for st in statuses.values()):
        _finish(cur, out, wf, statuses)
    return out


def _report_finished(cur: Any, out: Advanced, workflow_id: str, stages: dict[str, dict[str, Any]]) -> None:
    """One ``stage.finished`` event per stage whose execution ended (checked under the row lock)."""
    ended = [s for s in stages.values() if s["state"] == "started" and s["execution_status"] in executions.TERMINAL]
    if not ended:
        return
    cur.execute("SELECT data->>'stage' AS stage FROM workflow_events WHERE workflow_id = %s"
                " AND type = 'stage.finished'", (workflow_id,))
    reported = {r["stage"] for r in cur.fetchall()}
    for s in ended:
        if s["name"] not in reported:
            out.events.append(append_event(cur, workflow_id, "stage.finished", {
                "stage": s["name"], "execution_id": s["execution_id"], "status": s["execution_status"],
                "error": s["error"], "spent_cents": float(s["spent_cents"] or 0),
                "labels": list(s.get("labels") or [])}))


def _skip(cur: Any, out: Advanced, wf: dict[str, Any], s: dict[str, Any], reason: dict[str, Any]) -> None:
    cur.execute("UPDATE workflow_stages SET state = 'skipped', skip_reason = %s"
                " WHERE workflow_id = %s AND name = %s AND state = 'pending'", (Json(reason), wf["id"], s["name"]))
    s["state"], s["skip_reason"] = "skipped", reason
    out.events.append(append_event(cur, wf["id"], "stage.skipped", {"stage": s["name"], "reason": reason}))


def _budget_left(wf: dict[str, Any], stages: dict[str, dict[str, Any]]) -> Decimal | None:
    """What the workflow budget still allows: minus what finished stages spent and what running
    stages may still spend (their whole budget is reserved)."""
    if wf["budget_cents"] is None:
        return None
    committed = Decimal(0)
    for s in stages.values():
        if s["state"] == "started":
            done = s["execution_status"] in executions.TERMINAL
            committed += Decimal(s["spent_cents"] if done else s["execution_budget"])
    return Decimal(wf["budget_cents"]) - committed


def _start(cur: Any, out: Advanced, wf: dict[str, Any], s: dict[str, Any], stages: dict[str, dict[str, Any]]) -> None:
    spec = s["spec"]
    budget = int(spec["budget_cents"])
    left = _budget_left(wf, stages)
    if left is not None:
        budget = min(budget, int(left))
        if budget < MIN_STAGE_BUDGET:
            _skip(cur, out, wf, s, {"code": "workflow_budget_exhausted",
                                    "message": f"Only {max(left, Decimal(0)):.2f} cents of the workflow budget "
                                               f"({wf['budget_cents']}) are left for this stage"})
            return
    deps = {n: list(x["depends_on"]) for n, x in stages.items()}
    outputs = {n: (stages[n]["result"] or {}).get("output") for n in ancestors(deps, s["name"])}
    task = render(spec["task"], outputs)[:MAX_TASK_CHARS]
    # Labels follow the data: the outputs placed in this task bring the labels their stages carry
    # (phi, privileged, financial); the executor judges the task as a document with them.
    carried = sorted({str(label) for n in references(spec["task"]) if n in outputs
                      for label in (stages[n].get("labels") or [])} & set(CARRIED_LABELS))
    execution_id = new_id("exec")
    queued = {"compliance_policy": spec["compliance_policy"], "policy_version": spec["policy_version"],
              "effective_permissions": spec["effective_permissions"],
              "denied_permissions": spec["denied_permissions"], "budget_cents": budget,
              "provider": spec["provider"], "model": spec["model"], "workflow_id": wf["id"], "stage": s["name"]}
    executions.insert(cur, executions.NewExecution(
        id=execution_id, workspace_id=wf["workspace_id"], task=task, compliance_policy=spec["compliance_policy"],
        policy_version=spec["policy_version"], provider=spec["provider"], model=spec["model"], budget_cents=budget,
        requested_permissions=spec["requested_permissions"], effective_permissions=spec["effective_permissions"],
        denied_permissions=spec["denied_permissions"], webhook_url=None, queued_event=queued))
    cur.execute("UPDATE executions SET workflow_id = %s, workflow_stage = %s, state = COALESCE(%s, state)"
                " WHERE id = %s",
                (wf["id"], s["name"], Json({"labels": carried, "input_labels": carried}) if carried else None,
                 execution_id))
    cur.execute("UPDATE workflow_stages SET state = 'started', execution_id = %s, started_at = now()"
                " WHERE workflow_id = %s AND name = %s AND state = 'pending' RETURNING name",
                (execution_id, wf["id"], s["name"]))
    if cur.fetchone() is None:  # impossible under the row lock; refuse rather than start twice
        raise RuntimeError(f"stage {s['name']} of {wf['id']} was started concurrently")
    s.update(state="started", execution_id=execution_id, execution_status="queued", execution_budget=budget,
             spent_cents=Decimal(0), result=None)
    out.started.append(execution_id)
    started: dict[str, Any] = {"stage": s["name"], "execution_id": execution_id, "budget_cents": budget}
    if carried:
        started["labels"] = carried
    out.events.append(append_event(cur, wf["id"], "stage.started", started))


def _finish(cur: Any, out: Advanced, wf: dict[str, Any], statuses: dict[str, str]) -> None:
    bad = {n: st for n, st in statuses.items() if st != "succeeded"}
    if wf["cancel_requested"]:
        status = "cancelled"
        error: dict[str, Any] | None = {"code": "cancelled", "message": "The workflow was cancelled", "stages": bad}
    elif bad:
        status = "failed"
        error = {"code": "stage_failed", "stages": bad,
                 "message": "Stage(s) did not succeed: " + ", ".join(f"{n} ({st})" for n, st in bad.items())}
    else:
        status, error = "succeeded", None
    cur.execute("UPDATE workflows SET status = %s, error = %s, finished_at = now(), updated_at = now()"
                " WHERE id = %s AND status = 'running' RETURNING id",
                (status, Json(error) if error else None, wf["id"]))
    if cur.fetchone() is not None:
        out.status = status
        out.events.append(append_event(cur, wf["id"], f"workflow.{status}", {"status": status, "error": error,
                                                                              "stages": statuses}))


def request_cancel(cur: Any, workspace_id: str, workflow_id: str) -> tuple[str, Advanced, list[dict[str, Any]]] | None:
    """Cancel: pending stages are skipped, running executions asked to stop (queued ones stop at
    once). Returns (outcome, workflow changes, execution events); outcome is ``cancelled`` (ended
    now), ``cancel_requested`` (ends when its running stages stop) or ``terminal``."""
    cur.execute("SELECT id, status FROM workflows WHERE id = %s AND workspace_id = %s FOR UPDATE",
                (workflow_id, workspace_id))
    row = cur.fetchone()
    if row is None:
        return None
    if row["status"] != "running":
        return "terminal", Advanced(), []
    cur.execute("UPDATE workflows SET cancel_requested = true, updated_at = now() WHERE id = %s", (workflow_id,))
    exec_events: list[dict[str, Any]] = []
    cur.execute("SELECT s.execution_id FROM workflow_stages s JOIN executions e ON e.id = s.execution_id"
                " WHERE s.workflow_id = %s AND e.status IN ('queued', 'running') ORDER BY s.position", (workflow_id,))
    for r in cur.fetchall():
        outcome = runs.request_cancel(cur, workspace_id, r["execution_id"])
        if outcome is not None:
            exec_events += outcome[1]
    result = advance(cur, workflow_id)
    return ("cancelled" if result.status else "cancel_requested"), result, exec_events


# --- reads ----------------------------------------------------------------------------------------

_COLUMNS = "id, workspace_id, name, status, budget_cents, error, cancel_requested, event_count, created_at," \
           " finished_at, updated_at"


def get(db: Database, workspace_id: str, workflow_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    with db.transaction() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM workflows WHERE id = %s AND workspace_id = %s",
                    (workflow_id, workspace_id))
        wf = cur.fetchone()
        if wf is None:
            return None
        cur.execute(_STAGES, ([workflow_id],))
        return wf, cur.fetchall()


def list_page(db: Database, workspace_id: str, *, status: str | None, after_id: str | None,
              limit: int) -> tuple[list[tuple[dict[str, Any], list[dict[str, Any]]]], bool, int]:
    filters = ("status = %s",) if status is not None else ()
    with db.transaction() as cur:
        page, has_more, total = keyset_page(cur, "workflows", _COLUMNS, workspace_id, filters=filters,
                                            params=(status,) if status is not None else (),
                                            after_id=after_id, limit=limit)
        cur.execute(_STAGES, ([r["id"] for r in page],))
        stages: dict[str, list[dict[str, Any]]] = {}
        for s in cur.fetchall():
            stages.setdefault(s["workflow_id"], []).append(s)
    return [(r, stages.get(r["id"], [])) for r in page], has_more, total


def events_after(db: Database, workflow_id: str, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    rows = db.fetchall("SELECT workflow_id, seq, type, at, data FROM workflow_events WHERE workflow_id = %s"
                       " AND seq > %s ORDER BY seq LIMIT %s", (workflow_id, after, limit))
    return [{**r, "at": r["at"].isoformat()} for r in rows]
