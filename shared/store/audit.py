"""Reads for audit packages: everything a finished execution recorded, in one snapshot.

One REPEATABLE READ transaction so the execution row, its events, certificates and violations
are read at the same instant (a terminal execution no longer changes, but a package must never
mix two moments even if that ever stops being true).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db import Database
from shared.events import event_dict
from shared.store.executions import _COLUMNS, Execution


@dataclass(frozen=True)
class ExecutionRecords:
    execution: Execution
    events: list[dict[str, Any]]
    certificates: list[dict[str, Any]]
    violations: list[dict[str, Any]]


def execution_records(db: Database, workspace_id: str, execution_id: str) -> ExecutionRecords | None:
    """The execution and all it recorded, or None when it is not in this workspace."""
    with db.transaction() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute(f"SELECT {_COLUMNS} FROM executions WHERE id = %s AND workspace_id = %s",
                    (execution_id, workspace_id))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute("SELECT execution_id, seq, type, at, data FROM execution_events WHERE execution_id = %s"
                    " ORDER BY seq", (execution_id,))
        events = [event_dict(r) for r in cur.fetchall()]
        cur.execute("SELECT certificate FROM certificates WHERE execution_id = %s ORDER BY seq", (execution_id,))
        certificates = [r["certificate"] for r in cur.fetchall()]
        cur.execute("SELECT call_key, tool, arguments_sha256, violations, halted, created_at FROM violations"
                    " WHERE execution_id = %s ORDER BY id", (execution_id,))
        violations = [{**r, "created_at": r["created_at"].isoformat()} for r in cur.fetchall()]
    return ExecutionRecords(Execution(**row), events, certificates, violations)


def public_keys(db: Database, key_ids: set[str]) -> list[dict[str, Any]]:
    """(key_id, public_x) of the named signing keys, retired ones included."""
    if not key_ids:
        return []
    return db.fetchall("SELECT key_id, public_x FROM signing_keys WHERE key_id = ANY(%s) ORDER BY key_id",
                       (sorted(key_ids),))
