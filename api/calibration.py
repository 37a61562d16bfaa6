"""Calibration and explanation of conditions, and the workspace guardrails document.

``calibrate`` and ``explain`` are pure and take microseconds, so they run here; explaining a
fresh intent runs the pipeline, so it goes through the ``compiler`` queue like task creation.
Every calibration appends a new immutable condition version ("1.1", "1.2", …) bounded by the
ranges of the guardrails the condition was compiled with; tasks move to it only by PATCH.
"""

from __future__ import annotations

from typing import Any

from api import monitoring_present as present
from api.monitoring import compile_request
from api.services import Services
from compiler import (
    CalibrationError,
    Guardrails,
    GuardrailsError,
    calibrate,
    calibrated_condition,
    default_guardrails,
    explain,
    load_guardrails,
    validate_guardrails,
)
from shared.errors import BadRequest, NotFound
from shared.store import conditions
from shared.store import guardrails as guardrails_store


def guardrails_at(svc: Services, ws: str, revision: int) -> Guardrails:
    if not revision:
        return load_guardrails(None)
    row = guardrails_store.get_revision(svc.db, ws, revision)
    return load_guardrails(row.document if row else None)


def _not_found(condition_id: str) -> NotFound:
    return NotFound(f"Condition {condition_id} not found", code="condition_not_found")


def condition_versions(svc: Services, ws: str, condition_id: str) -> dict[str, Any]:
    versions = conditions.list_condition_versions(svc.db, ws, condition_id)
    if not versions:
        raise _not_found(condition_id)
    return {
        "condition_id": condition_id,
        "latest": present.condition(versions[-1]),
        "versions": [{"version": c.version, "strategy": {"type": c.strategy, "params": c.params},
                      "severity": c.severity, "created_from": c.created_from,
                      "created_at": c.created_at.isoformat()} for c in versions],
    }


def condition_version(svc: Services, ws: str, condition_id: str, version: str) -> dict[str, Any]:
    cond = conditions.get_condition(svc.db, ws, condition_id, version)
    if cond is None:
        raise NotFound(f"Condition {condition_id} has no version {version}", code="condition_version_not_found")
    return present.condition(cond, with_trace=True)


def explain_stored(svc: Services, ws: str, condition_id: str, version: str | None) -> dict[str, Any]:
    cond = conditions.get_condition(svc.db, ws, condition_id, version)
    if cond is None:
        raise _not_found(condition_id) if version is None else NotFound(
            f"Condition {condition_id} has no version {version}", code="condition_version_not_found")
    g = guardrails_at(svc, ws, cond.guardrails_revision)
    data = {"condition": present.condition_dict(cond), "trace": cond.body.get("trace", [])}
    return {"condition_id": cond.id, "condition_version": cond.version, **explain(data, guardrails=g)}


def explain_intent(svc: Services, ws: str, intent: str, entity_scope: str,
                   constraints: dict[str, Any] | None) -> dict[str, Any]:
    compiled, revision = compile_request(svc, ws, intent, entity_scope, {"type": "notification"}, constraints)
    g = guardrails_at(svc, ws, revision)
    return {"intent": intent, "entity_scope": entity_scope, **explain(compiled, guardrails=g)}


def apply_calibration(svc: Services, ws: str, condition_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Append the calibrated version; 404 unknown id, 400 out-of-range or foreign parameters."""
    params, feedback = data.get("params"), data.get("feedback")
    with svc.db.transaction() as cur:
        latest = conditions.lock_condition_id(cur, condition_id)
        base = conditions.get_condition(None, ws, condition_id, data.get("from_version"), cur=cur)
        if base is None or latest is None:
            if data.get("from_version") is not None and conditions.get_condition(None, ws, condition_id, cur=cur):
                raise BadRequest(f"Condition {condition_id} has no version {data['from_version']}",
                                 code="unknown_condition_version")
            raise _not_found(condition_id)
        g = guardrails_at(svc, ws, base.guardrails_revision)
        current = present.condition_dict(base)
        try:
            new_params = calibrate(current, params=params, feedback=feedback, guardrails=g)
            new = calibrated_condition(current, new_params, feedback=feedback, guardrails=g)
        except CalibrationError as exc:
            raise BadRequest(exc.message, code=exc.code, errors={"params" if params is not None else "feedback":
                                                                 [exc.message]}) from None
        step = {"stage": "calibrate", "input": {"from_version": base.version, "params": params,
                                                "feedback": feedback},
                "decision": new["strategy"], "rule": "calibration within guardrails.ranges",
                "explanation": f"Calibrated from version {base.version}"
                               + (f" on feedback {feedback}." if feedback else " with explicit parameters.")}
        created = conditions.insert_condition(cur, conditions.NewCondition(
            id=base.id, workspace_id=ws, concept_id=base.concept_id, concept_version=base.concept_version,
            strategy=new["strategy"]["type"], params=new["strategy"]["params"], metric=new["metric"],
            severity=new.get("severity"), plan=new["plan"],
            body={"description": new.get("description"), "provenance": new.get("provenance", {}),
                  "trace": [*base.body.get("trace", []), step]},
            guardrails_version=base.guardrails_version, guardrails_revision=base.guardrails_revision,
            created_from={"kind": "calibration", "from_version": base.version, "params": params,
                          "feedback": feedback},
            minor=latest + 1,
        ))
    return present.condition(created)


def guardrails_view(svc: Services, ws: str) -> dict[str, Any]:
    current = guardrails_store.current(svc.db, ws)
    versions = [{"revision": 0, "version": load_guardrails(None).version, "source": "default"}]
    versions += [{"revision": r["revision"], "version": r["version"], "source": "workspace",
                  "created_at": r["created_at"].isoformat()} for r in guardrails_store.list_revisions(svc.db, ws)]
    if current is None:
        doc = default_guardrails()
        return {"version": doc["version"], "revision": 0, "source": "default", "document": doc,
                "created_at": None, "versions": versions}
    return {"version": current.version, "revision": current.revision, "source": "workspace",
            "document": current.document, "created_at": current.created_at.isoformat(), "versions": versions}


def guardrails_revision(svc: Services, ws: str, revision: int) -> dict[str, Any]:
    """One stored revision (0: the shipped default), e.g. to PUT it back."""
    if revision == 0:
        doc = default_guardrails()
        return {"version": doc["version"], "revision": 0, "source": "default", "document": doc, "created_at": None}
    row = guardrails_store.get_revision(svc.db, ws, revision)
    if row is None:
        raise NotFound(f"Guardrails revision {revision} not found", code="guardrails_revision_not_found")
    return {"version": row.version, "revision": row.revision, "source": "workspace", "document": row.document,
            "created_at": row.created_at.isoformat()}


def put_guardrails(svc: Services, ws: str, document: dict[str, Any]) -> dict[str, Any]:
    """Validate and store a new revision; 400 listing every problem."""
    problems = validate_guardrails(document)
    if not problems:
        try:
            load_guardrails(document)
        except GuardrailsError as exc:
            problems = exc.errors
    if problems:
        raise BadRequest(f"Invalid guardrails document ({len(problems)} problem{'s' * (len(problems) != 1)})",
                         code="invalid_guardrails", errors={"document": problems})
    guardrails_store.append(svc.db, ws, document)
    return guardrails_view(svc, ws)
