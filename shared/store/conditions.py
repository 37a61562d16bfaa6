"""Immutable versions a monitoring Task pins: concepts, conditions and actions.

Every row is a version (``"1.0"``, ``"1.1"``, …; ``minor`` orders them) and the database refuses
updates and deletes (migration 0003's triggers). A change is always a new version: calibration
appends a condition version, a delivery change appends an action version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Json

_COND_COLUMNS = (
    "id, version, minor, workspace_id, concept_id, concept_version, strategy, params, metric, severity, plan,"
    " body, guardrails_version, guardrails_revision, created_from, immutable, created_at"
)


def version_label(minor: int) -> str:
    return f"1.{minor}"


@dataclass(frozen=True)
class Concept:
    id: str
    version: str
    minor: int
    workspace_id: str
    body: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Condition:
    id: str
    version: str
    minor: int
    workspace_id: str
    concept_id: str
    concept_version: str
    strategy: str
    params: dict[str, Any]
    metric: str
    severity: str | None
    plan: dict[str, Any]
    body: dict[str, Any]
    guardrails_version: str
    guardrails_revision: int
    created_from: dict[str, Any]
    immutable: bool
    created_at: datetime


@dataclass(frozen=True)
class Action:
    id: str
    version: str
    minor: int
    workspace_id: str
    binding: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class NewCondition:
    """A condition version to write; ``minor`` 0 for the first version of a new id."""

    id: str
    workspace_id: str
    concept_id: str
    concept_version: str
    strategy: str
    params: dict[str, Any]
    metric: str
    severity: str | None
    plan: dict[str, Any]
    body: dict[str, Any]
    guardrails_version: str
    guardrails_revision: int
    created_from: dict[str, Any]
    minor: int = 0


def insert_condition(cur: Any, new: NewCondition) -> Condition:
    cur.execute(
        f"INSERT INTO conditions ({_COND_COLUMNS.replace(', immutable, created_at', '')})"
        " VALUES (%(id)s, %(version)s, %(minor)s, %(workspace_id)s, %(concept_id)s, %(concept_version)s,"
        " %(strategy)s, %(params)s, %(metric)s, %(severity)s, %(plan)s, %(body)s, %(guardrails_version)s,"
        f" %(guardrails_revision)s, %(created_from)s) RETURNING {_COND_COLUMNS}",
        {"id": new.id, "version": version_label(new.minor), "minor": new.minor, "workspace_id": new.workspace_id,
         "concept_id": new.concept_id, "concept_version": new.concept_version, "strategy": new.strategy,
         "params": Json(new.params), "metric": new.metric, "severity": new.severity, "plan": Json(new.plan),
         "body": Json(new.body), "guardrails_version": new.guardrails_version,
         "guardrails_revision": new.guardrails_revision, "created_from": Json(new.created_from)},
    )
    return Condition(**cur.fetchone())


def insert_action(cur: Any, action_id: str, workspace_id: str, binding: dict[str, Any], minor: int = 0) -> str:
    version = version_label(minor)
    cur.execute("INSERT INTO actions (id, version, minor, workspace_id, binding) VALUES (%s, %s, %s, %s, %s)",
                (action_id, version, minor, workspace_id, Json(binding)))
    return version


def next_action_version(cur: Any, workspace_id: str, action_id: str, binding: dict[str, Any]) -> str:
    """Append a version of an existing action. The advisory lock serialises concurrent appends to
    one id (a row lock on the latest version would not: both waiters would compute the same next)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (action_id,))
    cur.execute("SELECT max(minor) AS m FROM actions WHERE id = %s AND workspace_id = %s", (action_id, workspace_id))
    latest = cur.fetchone()["m"]
    return insert_action(cur, action_id, workspace_id, binding, minor=(latest or 0) + 1)


def lock_condition_id(cur: Any, condition_id: str) -> int | None:
    """Serialise version appends for one condition id; returns the latest minor (None: no such id)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (condition_id,))
    cur.execute("SELECT max(minor) AS m FROM conditions WHERE id = %s", (condition_id,))
    return cur.fetchone()["m"]  # type: ignore[no-any-return]


def get_condition(db: Database | None, workspace_id: str, condition_id: str, version: str | None = None, *,
                  cur: Any = None) -> Condition | None:
    """One version (the latest when ``version`` is None), only within the workspace."""
    sql = f"SELECT {_COND_COLUMNS} FROM conditions WHERE id = %s AND workspace_id = %s"
    params: list[Any] = [condition_id, workspace_id]
    if version is None:
        sql += " ORDER BY minor DESC LIMIT 1"
    else:
        sql += " AND version = %s"
        params.append(version)
    if cur is not None:
        cur.execute(sql, params)
        row = cur.fetchone()
    else:
        assert db is not None
        row = db.fetchone(sql, params)
    return Condition(**row) if row else None


def list_condition_versions(db: Database, workspace_id: str, condition_id: str) -> list[Condition]:
    rows = db.fetchall(f"SELECT {_COND_COLUMNS} FROM conditions WHERE id = %s AND workspace_id = %s"
                       " ORDER BY minor", (condition_id, workspace_id))
    return [Condition(**r) for r in rows]


def get_concept(cur: Any, workspace_id: str, concept_id: str, version: str) -> Concept | None:
    cur.execute("SELECT id, version, minor, workspace_id, body, created_at FROM concepts"
                " WHERE id = %s AND version = %s AND workspace_id = %s", (concept_id, version, workspace_id))
    row = cur.fetchone()
    return Concept(**row) if row else None


def get_action(cur: Any, workspace_id: str, action_id: str, version: str) -> Action | None:
    cur.execute("SELECT id, version, minor, workspace_id, binding, created_at FROM actions"
                " WHERE id = %s AND version = %s AND workspace_id = %s", (action_id, version, workspace_id))
    row = cur.fetchone()
    return Action(**row) if row else None
