"""Per-workspace guardrails documents: an append-only list of revisions.

No row means the workspace uses the compiler's shipped default (revision 0). Each PUT appends
revision n+1 whose ``version`` is assigned here (``<document version>+r<n>``), so two PUTs of
documents that carry the same ``version`` label still get distinct versions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Json

_MAX_LABEL = 50


@dataclass(frozen=True)
class GuardrailsRevision:
    workspace_id: str
    revision: int
    version: str
    document: dict[str, Any]
    created_at: datetime


def assigned_version(label: str, revision: int) -> str:
    return f"{label[:_MAX_LABEL]}+r{revision}"


def current(db: Database | None, workspace_id: str, *, cur: Any = None) -> GuardrailsRevision | None:
    sql = ("SELECT workspace_id, revision, version, document, created_at FROM guardrails_versions"
           " WHERE workspace_id = %s ORDER BY revision DESC LIMIT 1")
    if cur is not None:
        cur.execute(sql, (workspace_id,))
        row = cur.fetchone()
    else:
        assert db is not None
        row = db.fetchone(sql, (workspace_id,))
    return GuardrailsRevision(**row) if row else None


def current_revisions(db: Database, workspace_ids: Iterable[str]) -> dict[str, int]:
    """The workspaces' current revision numbers (absent: 0, the shipped default), without the
    documents: the hot path of task creation needs only the numbers (the worker loads and caches
    the bodies). One query for a group of concurrent requests."""
    rows = db.fetchall("SELECT workspace_id, max(revision) AS n FROM guardrails_versions"
                       " WHERE workspace_id = ANY(%s) GROUP BY workspace_id", (list(workspace_ids),))
    return {r["workspace_id"]: int(r["n"]) for r in rows}


def get_revision(db: Database, workspace_id: str, revision: int) -> GuardrailsRevision | None:
    row = db.fetchone("SELECT workspace_id, revision, version, document, created_at FROM guardrails_versions"
                      " WHERE workspace_id = %s AND revision = %s", (workspace_id, revision))
    return GuardrailsRevision(**row) if row else None


def list_revisions(db: Database, workspace_id: str) -> list[dict[str, Any]]:
    return db.fetchall("SELECT revision, version, created_at FROM guardrails_versions WHERE workspace_id = %s"
                       " ORDER BY revision", (workspace_id,))


def append(db: Database, workspace_id: str, document: dict[str, Any]) -> GuardrailsRevision:
    """Store ``document`` as the next revision, its ``version`` replaced by the assigned one."""
    with db.transaction() as cur:
        # One writer per workspace at a time, so revisions are gapless and never collide.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('guardrails:' || %s))", (workspace_id,))
        cur.execute("SELECT coalesce(max(revision), 0) AS n FROM guardrails_versions WHERE workspace_id = %s",
                    (workspace_id,))
        revision = int(cur.fetchone()["n"]) + 1
        doc = {**document, "version": assigned_version(str(document["version"]), revision)}
        cur.execute("INSERT INTO guardrails_versions (workspace_id, revision, version, document)"
                    " VALUES (%s, %s, %s, %s) RETURNING workspace_id, revision, version, document, created_at",
                    (workspace_id, revision, doc["version"], Json(doc)))
        return GuardrailsRevision(**cur.fetchone())
