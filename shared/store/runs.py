"""SQL for a running execution: its per-step state, certificates, violations, the terminal
transition (with its webhook delivery enqueued in the same transaction), and cancel.

Shared by the executor (workers/) and the cancel endpoint (api/), which is why the terminal
transition lives here rather than in either.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.db import Json
from shared.events import append_event
from shared.ids import new_id
from shared.store.executions import TERMINAL

DELIVERY_TASK = "workers.delivery.execution_webhook"


def lock(cur: Any, execution_id: str) -> dict[str, Any] | None:
    """The row, locked for this transaction (serialises the executor with cancel)."""
    cur.execute("SELECT id, workspace_id, status, cancel_requested, state, spent_cents, usage, counts, webhook_url"
                " FROM executions WHERE id = %s FOR UPDATE", (execution_id,))
    return cur.fetchone()


def save(cur: Any, execution_id: str, *, state: dict[str, Any], spent_cents: Decimal, usage: dict[str, Any],
         counts: dict[str, Any]) -> None:
    cur.execute("UPDATE executions SET state = %s, spent_cents = %s, usage = %s, counts = %s, updated_at = now()"
                " WHERE id = %s", (Json(state), spent_cents, Json(usage), Json(counts), execution_id))


def start(cur: Any, execution_id: str, state: dict[str, Any]) -> bool:
    """Guarded queued → running; False when the row was not queued (or a cancel is pending)."""
    cur.execute("UPDATE executions SET status = 'running', started_at = now(), updated_at = now(), state = %s"
                " WHERE id = %s AND status = 'queued' AND NOT cancel_requested RETURNING id",
                (Json(state), execution_id))
    return cur.fetchone() is not None


def insert_certificate(cur: Any, execution_id: str, call_key: str, cert: dict[str, Any]) -> None:
    cur.execute("INSERT INTO certificates (id, execution_id, seq, call_key, certificate) VALUES (%s, %s, %s, %s, %s)",
                (cert["certificate_id"], execution_id, cert["seq"], call_key, Json(cert)))


def insert_violation(cur: Any, execution_id: str, call_key: str, tool: str, arguments_sha256: str,
                     violations: list[dict[str, Any]], halted: bool) -> None:
    cur.execute("INSERT INTO violations (execution_id, call_key, tool, arguments_sha256, violations, halted)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (execution_id, call_key, tool, arguments_sha256, Json(violations), halted))


def certificates(cur: Any, execution_id: str) -> list[dict[str, Any]]:
    cur.execute("SELECT certificate FROM certificates WHERE execution_id = %s ORDER BY seq", (execution_id,))
    return [r["certificate"] for r in cur.fetchall()]


def violations(cur: Any, execution_id: str) -> list[dict[str, Any]]:
    cur.execute("SELECT call_key, tool, arguments_sha256, violations, halted, created_at FROM violations"
                " WHERE execution_id = %s ORDER BY id", (execution_id,))
    return [{**r, "created_at": r["created_at"].isoformat()} for r in cur.fetchall()]


def finish(cur: Any, row: dict[str, Any], status: str, *, result: dict[str, Any] | None = None,
           error: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Terminal transition inside the caller's transaction (the row is locked by the caller).

    Appends the one terminal event and, when the execution has a webhook_url, the webhook
    delivery and its outbox row, so the callback is enqueued if and only if the run ended.
    Returns the terminal event for publishing after commit.
    """
    if status not in TERMINAL:
        raise ValueError(status)
    execution_id = row["id"]
    cur.execute("UPDATE executions SET status = %s, result = %s, error = %s, finished_at = now(),"
                " updated_at = now(), state = COALESCE(%s, state), cancel_requested = false"
                " WHERE id = %s AND status IN ('queued', 'running') RETURNING spent_cents, counts, workflow_id",
                (status, Json(result) if result is not None else None, Json(error) if error is not None else None,
                 Json(state) if state is not None else None, execution_id))
    updated = cur.fetchone()
    if updated is None:
        raise RuntimeError(f"execution {execution_id} is already terminal")
    event = append_event(cur, execution_id, f"execution.{status}", {
        "status": status, "result": result, "error": error, "spent_cents": float(updated["spent_cents"]),
        "counts": updated["counts"]})
    if updated["workflow_id"]:  # a workflow stage: advance the workflow, enqueued iff the stage ended
        cur.execute("INSERT INTO outbox (task_name, args, queue) VALUES (%s, %s, 'executions')",
                    ("workers.workflows.advance", Json([updated["workflow_id"]])))
    if row.get("webhook_url"):
        delivery_id = new_id("dlv")
        cur.execute("INSERT INTO webhook_deliveries (id, workspace_id, execution_id, url, event_type, webhook_id)"
                    " VALUES (%s, %s, %s, %s, 'execution.completed', %s)"
                    " ON CONFLICT (execution_id, event_type) WHERE execution_id IS NOT NULL DO NOTHING RETURNING id",
                    (delivery_id, row["workspace_id"], execution_id, row["webhook_url"], "msg_" + delivery_id[4:]))
        if cur.fetchone() is not None:
            # Same transaction as the terminal update: the relay publishes after commit.
            cur.execute("INSERT INTO outbox (task_name, args, queue) VALUES (%s, %s, 'delivery')",
                        (DELIVERY_TASK, Json([delivery_id])))
            cur.execute("SELECT pg_notify('warden_outbox', '')")
    return event


def request_cancel(cur: Any, workspace_id: str, execution_id: str) -> tuple[str, list[dict[str, Any]]] | None:
    """Cancel: queued → cancelled now; running → cancel_requested (the executor stops before its
    next step). Returns (outcome, events) with outcome ``cancelled``, ``cancel_requested`` or
    ``terminal``; None when there is no such execution in the workspace."""
    cur.execute("SELECT id, workspace_id, status, webhook_url FROM executions WHERE id = %s AND workspace_id = %s"
                " FOR UPDATE", (execution_id, workspace_id))
    row = cur.fetchone()
    if row is None:
        return None
    if row["status"] in TERMINAL:
        return "terminal", []
    if row["status"] == "queued":
        event = finish(cur, row, "cancelled", error={"code": "cancelled", "message": "Cancelled before it started"})
        return "cancelled", [event]
    cur.execute("UPDATE executions SET cancel_requested = true, updated_at = now() WHERE id = %s", (execution_id,))
    return "cancel_requested", []


def webhook_status(cur: Any, execution_id: str) -> dict[str, Any] | None:
    """The execution's callback delivery with its attempts, for the execution JSON."""
    cur.execute("SELECT id, url, webhook_id, status, attempt_count, last_error, delivered_at FROM webhook_deliveries"
                " WHERE execution_id = %s AND event_type = 'execution.completed'", (execution_id,))
    d = cur.fetchone()
    if d is None:
        return None
    cur.execute("SELECT attempt, status_code, error, duration_ms, at FROM webhook_attempts WHERE delivery_id = %s"
                " ORDER BY attempt", (d["id"],))
    attempts = [{**a, "at": a["at"].isoformat()} for a in cur.fetchall()]
    return {"delivery_id": d["id"], "webhook_id": d["webhook_id"], "status": d["status"],
            "attempt_count": d["attempt_count"], "last_error": d["last_error"],
            "delivered_at": d["delivered_at"].isoformat() if d["delivered_at"] else None, "attempts": attempts}
