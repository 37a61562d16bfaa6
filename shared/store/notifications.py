"""In-app notifications (one per alert delivered to ``notification``) and the workspace webhook
secret (shown and rotated through the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import webhooks
from shared.db import Database, Json
from shared.ids import new_id
from shared.paging import keyset_page

_COLUMNS = "id, workspace_id, alert_id, task_id, title, body, read_at, created_at"


def channel_for(workspace_id: str) -> str:
    return f"notifications:{workspace_id}"


def to_json(row: dict[str, Any]) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v is not None else None

    return {"notification_id": row["id"], "alert_id": row["alert_id"], "task_id": row["task_id"],
            "title": row["title"], "body": row["body"], "read": row["read_at"] is not None,
            "read_at": iso(row["read_at"]), "created_at": iso(row["created_at"])}


def insert_for_alert(cur: Any, workspace_id: str, alert_id: str, task_id: str, title: str,
                     body: dict[str, Any]) -> dict[str, Any]:
    """The alert's notification (created once; a repeat returns the existing one)."""
    cur.execute("INSERT INTO notifications (id, workspace_id, alert_id, task_id, title, body)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id) DO NOTHING",
                (new_id("ntf"), workspace_id, alert_id, task_id, title, Json(body)))
    cur.execute(f"SELECT {_COLUMNS} FROM notifications WHERE alert_id = %s", (alert_id,))
    return to_json(cur.fetchone())


def list_page(db: Database, workspace_id: str, *, unread: bool, after_id: str | None,
              limit: int) -> tuple[list[dict[str, Any]], bool, int]:
    with db.transaction() as cur:
        rows, has_more, total = keyset_page(cur, "notifications", _COLUMNS, workspace_id,
                                            filters=("read_at IS NULL",) if unread else (),
                                            after_id=after_id, limit=limit)
    return [to_json(r) for r in rows], has_more, total


def mark_read(db: Database, workspace_id: str, notification_id: str) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute(f"UPDATE notifications SET read_at = coalesce(read_at, now())"
                    f" WHERE id = %s AND workspace_id = %s RETURNING {_COLUMNS}", (notification_id, workspace_id))
        row = cur.fetchone()
    return to_json(row) if row else None


def rotate_webhook_secret(db: Database, workspace_id: str) -> str:
    secret = webhooks.new_secret()
    db.execute("UPDATE workspaces SET webhook_secret = %s WHERE id = %s", (secret, workspace_id))
    return secret


def list_after(db: Database, workspace_id: str, after_id: str, limit: int) -> list[dict[str, Any]]:
    """Notifications with an id after ``after_id``, oldest first (stream replay)."""
    rows = db.fetchall(f"SELECT {_COLUMNS} FROM notifications WHERE workspace_id = %s AND id > %s"
                       " ORDER BY id LIMIT %s", (workspace_id, after_id, limit))
    return [to_json(r) for r in rows]
