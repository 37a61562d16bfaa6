"""``compile_intent``: the traced pipeline from a plain-language intent to a compiled Task body.

``classify → resolve primitives → select strategy → fill parameters → generate concept and
condition → bind action → validate → compile``. Each stage appends one trace entry
``{"stage", "input", "decision", "rule", "explanation"}``. Nothing here reads a clock, draws a
random number or assigns an id, so the same intent under the same guardrails compiles to the
same bytes (``json.dumps(compiled.to_dict(), sort_keys=True)``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compiler.binding import EndpointCheck, bind_action
from compiler.errors import NO_PRIMITIVE, NO_VALID_STRATEGY, CompileError
from compiler.evaluate import build_plan
from compiler.guardrails import Guardrails, load_guardrails
from compiler.lexicon import scan_intent
from compiler.resolve import Classifier, classify, resolve_primitives
from compiler.strategies import Filled, describe, resolve_severity, select_and_fill
from compiler.text import normalize
from compiler.validate import validate_compiled

_CONCEPT_LABEL = {"increase": "increase", "decrease": "decrease", "any": "change"}
_CONCEPT_WATCH = {
    "increase": "an increase",
    "decrease": "a decrease",
    "any": "a change in either direction",
    "above": "a level at or above",
    "below": "a level at or below",
    "anomaly": "unusual values",
    "absence": "missing signals",
}


@dataclass(frozen=True)
class Compiled:
    """A compiled intent. Dict fields are owned by this object: use ``to_dict`` for a copy."""

    concept: dict[str, Any]
    condition: dict[str, Any]
    action: dict[str, Any]
    validation: dict[str, Any]
    trace: tuple[dict[str, Any], ...]
    guardrails_version: str

    @property
    def strategy(self) -> dict[str, Any]:
        return self.condition["strategy"]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "concept": self.concept,
                "condition": self.condition,
                "action": self.action,
                "validation": self.validation,
                "trace": list(self.trace),
                "guardrails_version": self.guardrails_version,
            }
        )


def _entry(stage: str, input_: Any, decision: Any, rule: str, explanation: str) -> dict[str, Any]:
    return {"stage": stage, "input": input_, "decision": decision, "rule": rule, "explanation": explanation}


def _constraints(constraints: Mapping[str, Any] | None, g: Guardrails) -> tuple[str | None, str | None]:
    if constraints is None:
        return None, None
    if not isinstance(constraints, Mapping):
        raise ValueError("constraints must be an object")
    sensitivity = constraints.get("sensitivity")
    namespace = constraints.get("namespace")
    if sensitivity is not None and sensitivity not in g.levels:
        raise ValueError(f"constraints.sensitivity must be one of {list(g.levels)}")
    if namespace is not None and not isinstance(namespace, str):
        raise ValueError("constraints.namespace must be a string")
    return sensitivity, (normalize(namespace) or None) if namespace is not None else None


def _concept_and_condition(
    filled: Filled, metric: str, entity_scope: str, g: Guardrails
) -> tuple[dict[str, Any], dict[str, Any]]:
    params = filled.params
    if filled.strategy == "threshold":
        label = f"{params['direction']} {params['value']:g}"
    elif filled.strategy == "change":
        label = _CONCEPT_LABEL[params["direction"]]
    else:
        label = filled.strategy
    key = params.get("direction", filled.strategy)
    watch = _CONCEPT_WATCH[key] + (f" {params['value']:g}" if filled.strategy == "threshold" else "")
    description = describe(filled.strategy, params, metric)
    concept = {
        "name": f"{entity_scope} {metric} {label}",
        "metric": metric,
        "entity_scope": entity_scope,
        "description": f"Watches {entity_scope} {metric} for {watch}.",
    }
    condition = {
        "strategy": {"type": filled.strategy, "params": dict(params)},
        "metric": metric,
        "severity": filled.severity.level,
        "description": description,
        "provenance": filled.provenance,
        "plan": build_plan(filled.strategy, params, metric, g.plan),
        "guardrails_version": g.version,
    }
    return concept, condition


def compile_intent(
    intent: str,
    entity_scope: str,
    delivery: Mapping[str, Any],
    constraints: Mapping[str, Any] | None = None,
    guardrails: Mapping[str, Any] | Guardrails | None = None,
    *,
    endpoint_check: EndpointCheck | None = None,
    classifier: Classifier | None = None,
) -> Compiled:
    """Compile ``intent`` for ``entity_scope`` with ``delivery``; CompileError when it cannot.

    ``guardrails``: a document (validated, cached by content) or a parsed ``Guardrails``;
    default: the shipped document. ``endpoint_check(url) -> reason | None`` vets webhook
    endpoints (default: ``compiler.binding.check_endpoint``). ``classifier(normalized_intent,
    guardrails_version)`` may name a metric or direction the lexicon missed. Raises
    ``GuardrailsError`` for an invalid document and ``ValueError``/``TypeError`` for
    malformed ``constraints``/``entity_scope`` (the API's schema catches those first).
    """
    if not isinstance(intent, str) or not isinstance(entity_scope, str):
        raise TypeError("intent and entity_scope must be strings")
    g = load_guardrails(guardrails)  # type: ignore[arg-type]
    sensitivity, namespace = _constraints(constraints, g)
    trace: list[dict[str, Any]] = []

    scan = scan_intent(intent, entity_scope, g)
    kind = classify(scan)
    trace.append(
        _entry(
            "classify",
            {"intent": intent, "entity_scope": entity_scope},
            kind,
            f"lexicon@{g.version}",
            f"Read the intent as {kind['kind']}"
            + (f" ({', '.join(kind['families'])})." if kind["families"] else "; no condition words."),
        )
    )

    prims = resolve_primitives(scan, kind["families"], g, namespace, classifier)
    rule = "guardrails.metrics + guardrails.directions + severity.vocabulary"
    if prims.classifier_note:
        rule += f" ({prims.classifier_note})"
    missing = []
    if prims.metric is None:
        missing.append(f"no metric (known metrics: {', '.join(g.metrics)})")
    if not prims.families:
        missing.append("no condition (e.g. 'rises', 'falls below 150', 'unusual', 'stops reporting')")
    trace.append(
        _entry(
            "resolve_primitives",
            {"normalized": scan.normalized},
            prims.summary(),
            rule,
            f"Found metric {prims.metric or 'none'}, condition words "
            f"{', '.join(prims.movement_words + [c.text for c in prims.comparators] + prims.anomaly_words + prims.absence_words) or 'none'}"  # noqa: E501
            f" and severity word {prims.severity_word or 'none'}.",
        )
    )
    if missing:
        raise CompileError(
            NO_PRIMITIVE, f"Could not understand the intent {intent!r}: " + "; ".join(missing) + ".", trace
        )

    sev = resolve_severity(prims, g, sensitivity)
    result = select_and_fill(prims, scan, g, sev, namespace)
    if not isinstance(result, Filled):
        reasons = "; ".join(f"{r['strategy']}: {r['reason']}" for r in result) or "no strategy applies"
        trace.append(
            _entry(
                "select_strategy",
                {"priority": list(g.priority), "families": prims.families},
                {"strategy": None, "rejected": result},
                "strategy_priority",
                "No strategy in the priority order could be filled within the guardrails.",
            )
        )
        raise CompileError(NO_VALID_STRATEGY, f"No valid strategy for {intent!r}: {reasons}.", trace)
    trace.append(
        _entry(
            "select_strategy",
            {"priority": list(g.priority), "families": prims.families},
            {"strategy": result.strategy, "rejected": result.rejected},
            "strategy_priority",
            f"Chose {result.strategy}, the first strategy in the priority order that applies"
            + (
                f" and fills (rejected: {', '.join(r['strategy'] for r in result.rejected)})."
                if result.rejected
                else "."
            ),
        )
    )
    sources = ", ".join(f"{name} from {prov['source']}" for name, prov in sorted(result.provenance.items()))
    trace.append(
        _entry(
            "fill_parameters",
            {
                "severity": {"level": sev.level, "base": sev.base, "from": sev.source, "bias": sev.bias},
                "sensitivity": sensitivity,
                "namespace": namespace,
            },
            {"params": result.params, "provenance": result.provenance, "notes": result.notes},
            f"priors.{result.strategy}.{sev.level} + bias_rules",
            f"Filled {result.strategy} parameters ({sources}) at severity {sev.level}.",
        )
    )

    metric = prims.metric
    assert metric is not None
    concept, condition = _concept_and_condition(result, metric, entity_scope, g)
    trace.append(
        _entry(
            "generate_concept_condition",
            {"metric": metric, "entity_scope": entity_scope},
            {"concept": concept["name"], "strategy": condition["strategy"]},
            "strategy templates",
            condition["description"],
        )
    )

    action, bind_rule = bind_action(delivery, g, condition["description"], endpoint_check, trace)
    trace.append(
        _entry(
            "bind_action",
            {"delivery_type": action["type"]},
            action,
            bind_rule,
            f"Bound delivery to a {action['type']} action.",
        )
    )

    validation = validate_compiled(condition, action, g)
    passed = sum(1 for c in validation["checks"] if c["ok"])
    trace.append(
        _entry(
            "validate",
            {"strategy": condition["strategy"]},
            validation,
            "guardrails.ranges",
            f"{passed} of {len(validation['checks'])} validation checks passed.",
        )
    )
    if not validation["valid"]:  # belt and braces: fill already kept every value in range
        failed = "; ".join(c["detail"] for c in validation["checks"] if not c["ok"])
        raise CompileError(NO_VALID_STRATEGY, f"Compiled condition failed validation: {failed}.", trace)

    plan = condition["plan"]
    trace.append(
        _entry(
            "compile",
            {"strategy": result.strategy},
            {"plan": plan},
            "plan v1",
            f"Compiled to a {plan['strategy']} plan over {plan['window_seconds']} seconds of {metric}.",
        )
    )
    return Compiled(concept, condition, action, validation, tuple(trace), g.version)
