"""Workspace documents: what the agent's read/write/list tools operate on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.db import Database, Json, Prepared
from shared.ids import new_id

COLUMNS = "id, workspace_id, name, content, labels, created_by, created_at, updated_at"
# The guard sees at most this many documents per decision (labels and content of each).
CONTEXT_LIMIT = 500


@dataclass(frozen=True)
class Document:
    id: str
    workspace_id: str
    name: str
    content: str
    labels: list[str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime

    def summary(self) -> dict[str, Any]:
        return {"document_id": self.id, "name": self.name, "labels": self.labels, "size": len(self.content)}


def upsert(cur: Any, workspace_id: str, name: str, content: str, labels: list[str] | None,
           created_by: str | None) -> tuple[Document, bool]:
    """Create or overwrite by name; returns (document, created). ``labels=None`` keeps the
    existing labels on overwrite. ON CONFLICT makes two concurrent writers of one name safe."""
    cur.execute(
        f"INSERT INTO documents (id, workspace_id, name, content, labels, created_by)"
        f" VALUES (%s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (workspace_id, name) DO UPDATE SET content = EXCLUDED.content,"
        f"   labels = CASE WHEN %s THEN documents.labels ELSE EXCLUDED.labels END, updated_at = now()"
        f" RETURNING {COLUMNS}, (xmax = 0) AS created",
        (new_id("doc"), workspace_id, name, content, Json(labels or []), created_by, labels is None),
    )
    row = cur.fetchone()
    created = bool(row.pop("created"))
    return Document(**row), created


def get(cur: Any, workspace_id: str, key: str) -> Document | None:
    """By id or, failing that, by name."""
    cur.execute(f"SELECT {COLUMNS} FROM documents WHERE workspace_id = %s AND (id = %s OR name = %s)"
                " ORDER BY (id = %s) DESC LIMIT 1", (workspace_id, key, key, key))
    row = cur.fetchone()
    return Document(**row) if row else None


# Every tool call reads the workspace's documents for Guard.verify: prepared once per connection.
_LIST_ALL = Prepared(f"SELECT {COLUMNS} FROM documents WHERE workspace_id = %(ws)s ORDER BY id LIMIT %(limit)s")


def list_all(cur: Any, workspace_id: str, limit: int = CONTEXT_LIMIT) -> list[Document]:
    _LIST_ALL.execute(cur, {"ws": workspace_id, "limit": limit})
    return [Document(**r) for r in cur.fetchall()]


def from_json(rows: list[dict[str, Any]]) -> list[Document]:
    """Documents from ``json_agg`` of rows with :data:`COLUMNS` (as list_all would give them)."""
    return [Document(**{**r, "created_at": datetime.fromisoformat(r["created_at"]),
                        "updated_at": datetime.fromisoformat(r["updated_at"])}) for r in rows]


def list_page(db: Database, workspace_id: str, *, after_id: str | None, limit: int,
              label: str | None = None) -> tuple[list[Document], bool, int]:
    """A page, newest first, whether more follow, and how many match in all (``label`` filter)."""
    where, params = ["workspace_id = %s"], [workspace_id]
    if label is not None:
        where.append("labels ? %s")
        params.append(label)
    counted = db.fetchone(f"SELECT count(*) AS n FROM documents WHERE {' AND '.join(where)}", params)
    total = int(counted["n"]) if counted else 0
    if after_id is not None:
        where.append("id < %s")
        params.append(after_id)
    rows = db.fetchall(f"SELECT {COLUMNS} FROM documents WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
                       [*params, limit + 1])
    return [Document(**r) for r in rows[:limit]], len(rows) > limit, total
