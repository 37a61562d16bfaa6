"""Turning stored monitoring records into the JSON seed 002 promises."""

from __future__ import annotations

from typing import Any

from shared.store.conditions import Action, Concept, Condition
from shared.store.tasks import Task


def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def task(t: Task) -> dict[str, Any]:
    """The Task object: exactly the seed's fields, in the seed's order."""
    return {
        "task_id": t.id,
        "intent": t.intent,
        "concept_id": t.concept_id,
        "concept_version": t.concept_version,
        "condition_id": t.condition_id,
        "condition_version": t.condition_version,
        "action_id": t.action_id,
        "action_version": t.action_version,
        "entity_scope": t.entity_scope,
        "status": t.status,
        "created_at": _ts(t.created_at),
        "last_triggered_at": _ts(t.last_triggered_at),
    }


def concept(c: Concept) -> dict[str, Any]:
    return {"concept_id": c.id, "version": c.version, **c.body, "created_at": _ts(c.created_at)}


def condition(c: Condition, *, with_trace: bool = False) -> dict[str, Any]:
    out = {
        "condition_id": c.id,
        "version": c.version,
        "concept_id": c.concept_id,
        "concept_version": c.concept_version,
        "strategy": {"type": c.strategy, "params": c.params},
        "metric": c.metric,
        "severity": c.severity,
        "description": c.body.get("description"),
        "provenance": c.body.get("provenance", {}),
        "plan": c.plan,
        "guardrails_version": c.guardrails_version,
        "created_from": c.created_from,
        "immutable": c.immutable,
        "created_at": _ts(c.created_at),
    }
    if with_trace:
        out["trace"] = c.body.get("trace", [])
    return out


def condition_dict(c: Condition) -> dict[str, Any]:
    """The compiler's view of a stored condition (what ``explain`` and ``calibrate`` take)."""
    return {
        "strategy": {"type": c.strategy, "params": c.params},
        "metric": c.metric,
        "severity": c.severity,
        "description": c.body.get("description"),
        "provenance": c.body.get("provenance", {}),
        "plan": c.plan,
        "guardrails_version": c.guardrails_version,
    }


def action(a: Action) -> dict[str, Any]:
    return {"action_id": a.id, "version": a.version, **a.binding, "created_at": _ts(a.created_at)}


def detail(t: Task, pinned: tuple[Concept | None, Condition | None, Action | None]) -> dict[str, Any]:
    """GET /tasks/{id}: the Task plus the pinned objects and trigger metadata."""
    c, cond, a = pinned
    return {
        **task(t),
        "concept": concept(c) if c else None,
        "condition": condition(cond) if cond else None,
        "action": action(a) if a else None,
        "guardrails_version": t.guardrails_version,
        "trigger": {"last_triggered_at": _ts(t.last_triggered_at), "trigger_count": t.trigger_count,
                    "evaluated": t.status == "active"},
        "updated_at": _ts(t.updated_at),
    }


def dry_run(intent: str, entity_scope: str, compiled: dict[str, Any]) -> dict[str, Any]:
    """DryRunResult: what would be created, nothing persisted."""
    return {
        "status": "preview",
        "intent": intent,
        "entity_scope": entity_scope,
        "concept": compiled["concept"],
        "condition": compiled["condition"],
        "action": compiled["action"],
        "validation": compiled["validation"],
        "trace": compiled["trace"],
        "guardrails_version": compiled["guardrails_version"],
    }
