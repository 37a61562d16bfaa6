"""The execution as JSON: one shape for the API, the terminal webhook and audit exports."""

from __future__ import annotations

from typing import Any

from shared.store.executions import Execution


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def execution_json(e: Execution, *, webhook: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "execution_id": e.id,
        "task": e.task,
        "status": e.status,
        "compliance_policy": e.compliance_policy,
        "policy_version": e.policy_version,
        "provider": e.provider,
        "model": e.model,
        "budget_cents": e.budget_cents,
        "spent_cents": float(e.spent_cents),
        "requested_permissions": e.requested_permissions,
        "effective_permissions": e.effective_permissions,
        "denied_permissions": e.denied_permissions,
        "webhook_url": e.webhook_url,
        "result": e.result,
        "labels": list(e.labels),
        "error": e.error,
        "usage": e.usage,
        "counts": {"events": e.event_count, "tool_calls": 0, "certificates": 0, "blocked": 0, **e.counts},
        "cancel_requested": e.cancel_requested,
        "created_at": _ts(e.created_at),
        "started_at": _ts(e.started_at),
        "finished_at": _ts(e.finished_at),
        "updated_at": _ts(e.updated_at),
        "worker": e.worker,
    }
    if webhook is not None:
        out["webhook"] = webhook
    return out
