"""``explain``: where every parameter of a compiled condition came from, as data and in words.

Works from a ``Compiled``, its ``to_dict()``, or a stored condition dict alone (conditions carry
their ``provenance``, so an explanation needs no trace). With a trace, each stage also gets its
one-sentence explanation.
"""

from __future__ import annotations

from typing import Any

from compiler.guardrails import Guardrails, load_guardrails
from compiler.units import fraction_words, number_words

_SOURCE_WORDS = {
    "namespace default": "the namespace's default metric",
    "strategy default": "the guardrails default metric for this kind of condition",
    "classifier": "the classifier",
}


def _show(name: str, value: Any) -> str:
    if name == "value" and isinstance(value, float) and 0 < abs(value) <= 1:
        return f"{value:g} ({fraction_words(value)})"
    return number_words(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _chain(name: str, value: Any, prov: dict[str, Any], g: Guardrails, strategy: str) -> tuple[list, str]:
    source = prov.get("source")
    shown = _show(name, value)
    if source == "explicit":
        return (
            [{"step": "intent text", "value": prov.get("text")}, {"step": name, "value": value}],
            f"{name} = {shown}: explicit number in intent ('{prov.get('text')}').",
        )
    if source == "intent word":
        words = prov.get("words") or [prov.get("word")]
        return (
            [{"step": "intent word", "value": words}, {"step": name, "value": value}],
            f"{name} = {shown}: from the word{'s' if len(words) > 1 else ''} {', '.join(repr(w) for w in words)}.",
        )
    if source == "prior":
        origin = prov.get("severity_from") or {}
        chain: list[dict[str, Any]] = []
        if origin.get("word"):
            chain.append({"step": "severity word", "value": origin["word"], "rule": "severity.vocabulary"})
            start = f"'{origin['word']}' → {prov.get('base_severity', prov.get('severity'))}"
        else:
            chain.append({"step": "default severity", "value": g.default_severity, "rule": "severity.default"})
            start = f"no severity word, so the default {prov.get('base_severity', g.default_severity)}"
        words = [start]
        for bias in prov.get("bias") or ():
            if "factor" in bias:
                continue
            chain.append({"step": "bias", "value": bias.get("to"), "rule": bias.get("rule")})
            words.append(f"{bias.get('rule')} ({bias.get('effect')})")
        chain.append({"step": "severity", "value": prov.get("severity")})
        chain.append({"step": "prior", "value": prov.get("prior"), "rule": f"priors.{prov.get('prior')}"})
        chain.append({"step": "prior value", "value": prov.get("prior_value")})
        words += [f"severity {prov.get('severity')}", f"prior {prov.get('prior')} = {prov.get('prior_value')}"]
        for bias in prov.get("bias") or ():
            if "factor" in bias:
                chain.append({"step": "bias", "value": bias.get("to"), "rule": bias.get("rule")})
                words.append(f"×{bias['factor']:g} by {bias.get('rule')}")
        chain.append({"step": name, "value": value})
        return chain, f"{name} = {shown}: " + " → ".join(words) + "."
    if source == "calibration":
        how = f"feedback {prov['feedback']}" if prov.get("feedback") else "explicit calibration"
        return (
            [{"step": "calibration", "value": value, "previous": prov.get("previous")}],
            f"{name} = {shown}: set by {how} (was {prov.get('previous')}).",
        )
    return [{"step": name, "value": value}], f"{name} = {shown}: provenance not recorded."


def explain(compiled_or_condition: Any, guardrails: dict[str, Any] | Guardrails | None = None) -> dict[str, Any]:
    """``{"strategy", "metric", "severity", "description", "guardrails_version", "explained_with",
    "parameters": [{"name", "value", "source", "chain", "sentence"}], "stages": [{"stage",
    "rule", "decision", "sentence"}], "sentences": [...]}``."""
    g = load_guardrails(guardrails)
    data = compiled_or_condition.to_dict() if hasattr(compiled_or_condition, "to_dict") else compiled_or_condition
    if not isinstance(data, dict):
        raise TypeError("explain takes a Compiled, its to_dict(), or a condition dict")
    condition = data.get("condition", data)
    try:
        strategy = condition["strategy"]["type"]
        params = condition["strategy"]["params"]
    except (KeyError, TypeError):
        raise ValueError("condition must carry strategy.type and strategy.params") from None
    provenance = condition.get("provenance") or {}
    parameters = []
    for name in sorted(params):
        chain, sentence = _chain(name, params[name], provenance.get(name) or {}, g, strategy)
        parameters.append(
            {
                "name": name,
                "value": params[name],
                "source": (provenance.get(name) or {}).get("source"),
                "chain": chain,
                "sentence": sentence,
            }
        )
    stages = [
        {"stage": t["stage"], "rule": t["rule"], "decision": t["decision"], "sentence": t["explanation"]}
        for t in data.get("trace") or ()
    ]
    if not stages:
        stages = [
            {
                "stage": "fill_parameters",
                "rule": f"priors + bias_rules @ {condition.get('guardrails_version')}",
                "decision": dict(params),
                "sentence": " ".join(p["sentence"] for p in parameters),
            }
        ]
    version = condition.get("guardrails_version")
    sentences = [s["sentence"] for s in stages]
    if condition.get("description") and not data.get("trace"):
        sentences.append(condition["description"])
    if version != g.version:
        sentences.append(f"Compiled under guardrails {version}; explained with {g.version}.")
    return {
        "strategy": {"type": strategy, "params": dict(params)},
        "metric": condition.get("metric"),
        "severity": condition.get("severity"),
        "description": condition.get("description"),
        "guardrails_version": version,
        "explained_with": g.version,
        "parameters": parameters,
        "stages": stages,
        "sentences": sentences,
    }
