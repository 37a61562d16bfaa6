"""Monitoring Tasks: creation (concept + condition + action versions + task in one transaction),
reading, keyset pages, operational updates and soft deletion."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Json
from shared.paging import keyset_page
from shared.store import conditions

STATUSES = ("active", "paused", "deleted")

_COLUMNS = (
    "id, workspace_id, intent, constraints, concept_id, concept_version, condition_id, condition_version,"
    " action_id, action_version, entity_scope, metric, status, guardrails_version, guardrails_revision,"
    " trigger_count, created_at, updated_at, deleted_at, last_triggered_at"
)


@dataclass(frozen=True)
class Task:
    id: str
    workspace_id: str
    intent: str
    constraints: dict[str, Any] | None
    concept_id: str
    concept_version: str
    condition_id: str
    condition_version: str
    action_id: str
    action_version: str
    entity_scope: str
    metric: str
    status: str
    guardrails_version: str
    guardrails_revision: int
    trigger_count: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    last_triggered_at: datetime | None


@dataclass(frozen=True)
class NewTask:
    """Everything a compiled intent persists. Ids are assigned by the caller."""

    task_id: str
    concept_id: str
    condition_id: str
    action_id: str
    workspace_id: str
    intent: str
    constraints: dict[str, Any] | None
    entity_scope: str
    concept: dict[str, Any]
    condition: dict[str, Any]  # the compiler's condition dict, plus "trace"
    action: dict[str, Any]
    guardrails_version: str
    guardrails_revision: int


# One statement, one round trip: concept 1.0, condition 1.0, action 1.0 and the task. The
# foreign keys are checked at the end of the statement, when every CTE has inserted its row.
_INSERT = f"""
WITH cp AS (
  INSERT INTO concepts (id, version, minor, workspace_id, body)
  VALUES (%(concept_id)s, '1.0', 0, %(workspace_id)s, %(concept)s)
), cd AS (
  INSERT INTO conditions (id, version, minor, workspace_id, concept_id, concept_version, strategy, params, metric,
                          severity, plan, body, guardrails_version, guardrails_revision, created_from)
  VALUES (%(condition_id)s, '1.0', 0, %(workspace_id)s, %(concept_id)s, '1.0', %(strategy)s, %(params)s,
          %(metric)s, %(severity)s, %(plan)s, %(body)s, %(guardrails_version)s, %(guardrails_revision)s,
          %(created_from)s)
), ac AS (
  INSERT INTO actions (id, version, minor, workspace_id, binding)
  VALUES (%(action_id)s, '1.0', 0, %(workspace_id)s, %(action)s)
)
INSERT INTO tasks (id, workspace_id, intent, constraints, concept_id, concept_version, condition_id,
                   condition_version, action_id, action_version, entity_scope, metric, status, guardrails_version,
                   guardrails_revision)
VALUES (%(task_id)s, %(workspace_id)s, %(intent)s, %(constraints)s, %(concept_id)s, '1.0', %(condition_id)s, '1.0',
        %(action_id)s, '1.0', %(entity_scope)s, %(metric)s, 'active', %(guardrails_version)s,
        %(guardrails_revision)s)
RETURNING {_COLUMNS}
"""


def insert(cur: Any, new: NewTask) -> Task:
    """Write concept 1.0, condition 1.0, action 1.0 and the task (one statement, so atomic even
    outside a transaction; callers that also record an Idempotency-Key use one transaction)."""
    c = new.condition
    cur.execute(_INSERT, {
        "task_id": new.task_id, "concept_id": new.concept_id, "condition_id": new.condition_id,
        "action_id": new.action_id, "workspace_id": new.workspace_id, "concept": Json(new.concept),
        "strategy": c["strategy"]["type"], "params": Json(c["strategy"]["params"]), "metric": c["metric"],
        "severity": c.get("severity"), "plan": Json(c["plan"]),
        "body": Json({k: v for k, v in c.items() if k not in ("strategy", "metric", "severity", "plan",
                                                              "guardrails_version")}),
        "guardrails_version": new.guardrails_version, "guardrails_revision": new.guardrails_revision,
        "created_from": Json({"kind": "intent", "intent": new.intent, "entity_scope": new.entity_scope,
                              "constraints": new.constraints}),
        "action": Json(new.action), "intent": new.intent,
        "constraints": Json(new.constraints) if new.constraints is not None else None,
        "entity_scope": new.entity_scope,
    })
    return Task(**cur.fetchone())


def get(db: Database | None, workspace_id: str, task_id: str, *, cur: Any = None, lock: bool = False
        ) -> Task | None:
    sql = f"SELECT {_COLUMNS} FROM tasks WHERE id = %s AND workspace_id = %s" + (" FOR UPDATE" if lock else "")
    if cur is not None:
        cur.execute(sql, (task_id, workspace_id))
        row = cur.fetchone()
    else:
        assert db is not None
        row = db.fetchone(sql, (task_id, workspace_id))
    return Task(**row) if row else None


def list_page(db: Database, workspace_id: str, *, status: str | None, after_id: str | None,
              limit: int) -> tuple[list[Task], bool, int]:
    """Newest first by id (ULIDs sort by time): a keyset page never shifts when rows are inserted."""
    filters = ("status = %s",) if status is not None else ()
    with db.transaction() as cur:
        rows, has_more, total = keyset_page(cur, "tasks", _COLUMNS, workspace_id, filters=filters,
                                            params=(status,) if status is not None else (),
                                            after_id=after_id, limit=limit)
    return [Task(**r) for r in rows], has_more, total


def update(cur: Any, workspace_id: str, task_id: str, *, status: str | None = None,
           entity_scope: str | None = None, condition_version: str | None = None,
           action_version: str | None = None) -> Task:
    """Operational changes only; the caller holds the row lock (``get(..., lock=True)``)."""
    sets, params = ["updated_at = now()"], []
    for column, value in (("status", status), ("entity_scope", entity_scope),
                          ("condition_version", condition_version), ("action_version", action_version)):
        if value is not None:
            sets.append(f"{column} = %s")
            params.append(value)
    if status == "deleted":
        sets.append("deleted_at = now()")
    cur.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = %s AND workspace_id = %s RETURNING {_COLUMNS}",
                [*params, task_id, workspace_id])
    return Task(**cur.fetchone())


def pinned(db: Database, task: Task) -> tuple[conditions.Concept | None, conditions.Condition | None,
                                               conditions.Action | None]:
    """The concept, condition and action versions a task pins, read in one transaction."""
    with db.transaction() as cur:
        concept = conditions.get_concept(cur, task.workspace_id, task.concept_id, task.concept_version)
        condition = conditions.get_condition(None, task.workspace_id, task.condition_id, task.condition_version,
                                             cur=cur)
        action = conditions.get_action(cur, task.workspace_id, task.action_id, task.action_version)
    return concept, condition, action
