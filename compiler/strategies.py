"""Stages 3 and 4: select a strategy in the guardrails priority order and fill its parameters.

A strategy is *applicable* when its primitive is present (a comparator for ``threshold``, a
movement word for ``change``, an anomaly word or z-score for ``anomaly``, an absence word for
``absence``). The first applicable strategy whose parameters can all be filled inside the
guardrails ranges wins; every rejection is kept with its reason for the trace.

Parameter values are never guessed. Each comes from exactly one of: an explicit number or window
in the intent (always wins), or the prior ``<strategy>.<severity>`` after the bias rules. Severity
is the intent's severity word (or the default), shifted or set by ``constraints.sensitivity``;
a namespace may scale prior values. Explicit numbers are never biased.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.guardrails import Guardrails
from compiler.lexicon import Located, Number, Scan
from compiler.resolve import Primitives
from compiler.units import clean_float, clean_number, format_window, fraction_words, window_words

_POSTFIX_COMPARATORS = frozenset({"or more", "or higher", "or less", "or lower"})
_AGREES = {"above": "increase", "below": "decrease"}  # comparator direction ↔ movement it goes with
_NUMBER_REACH = 3  # a comparator takes the first number at most this many tokens after it


class Reject(Exception):
    """This strategy cannot be filled; the message says why."""


@dataclass(slots=True)
class Severity:
    level: str
    base: str
    source: dict[str, Any]
    bias: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Filled:
    strategy: str
    params: dict[str, Any]
    provenance: dict[str, dict[str, Any]]
    severity: Severity
    rejected: list[dict[str, str]]
    notes: list[str]


def resolve_severity(prims: Primitives, g: Guardrails, sensitivity: str | None) -> Severity:
    """The severity level after the sensitivity bias rule."""
    if prims.severity_level:
        base, source = prims.severity_level, {"source": "intent word", "word": prims.severity_word}
    else:
        base, source = g.default_severity, {"source": "guardrails default", "rule": "severity.default"}
    sev = Severity(base, base, source)
    rule = g.sensitivity.get(sensitivity) if sensitivity else None
    if rule:
        level = rule["set"] if "set" in rule else g.shift(base, int(rule["shift"]))
        if level != base or "set" in rule:
            sev.bias.append(
                {
                    "rule": f"bias_rules.sensitivity.{sensitivity}",
                    "from": base,
                    "to": level,
                    "effect": f"set {level}" if "set" in rule else f"shift {int(rule['shift']):+d}",
                }
            )
        sev.level = level
    return sev


def _scaled_prior(
    g: Guardrails, strategy: str, param: str, sev: Severity, namespace: str | None
) -> tuple[Any, dict[str, Any]]:
    key = f"{strategy}.{sev.level}"
    prior = g.priors.get(key) or {}
    if param not in prior:
        raise Reject(f"guardrails have no prior {key}.{param}")
    value = prior[param]
    prov: dict[str, Any] = {
        "source": "prior",
        "prior": key,
        "prior_value": value,
        "severity": sev.level,
        "base_severity": sev.base,
        "severity_from": sev.source,
        "bias": list(sev.bias),
    }
    factor = ((g.namespaces.get(namespace or "") or {}).get("scale") or {}).get(f"{strategy}.{param}")
    if factor is not None and param != "window":
        scaled = clean_float(float(value) * float(factor))
        prov["bias"].append(
            {
                "rule": f"bias_rules.namespaces.{namespace}.scale.{strategy}.{param}",
                "factor": factor,
                "from": value,
                "to": scaled,
            }
        )
        value = scaled
    return value, prov


def _check_range(g: Guardrails, key: str, value: float, what: str) -> None:
    rng = g.ranges[key]
    if value != value or not rng.contains(value):  # value != value catches NaN
        raise Reject(f"{what} is outside the allowed range {rng.text()} for {key}")


def _window(scan: Scan, g: Guardrails, strategy: str, sev: Severity) -> tuple[str, dict[str, Any]]:
    if scan.windows:
        found = scan.windows[0]
        seconds = int(found.value)
        window = format_window(seconds)
        if not g.window_allowed(seconds):
            raise Reject(f"window '{found.text}' ({window}) is not one of the allowed windows {', '.join(g.windows)}")
        return window, {"source": "explicit", "text": found.text}
    value, prov = _scaled_prior(g, strategy, "window", sev, None)
    return str(value), prov


def _threshold_number(prims: Primitives, scan: Scan, g: Guardrails) -> tuple[Located, Number] | str:
    """The first comparator with its number, or why there is none."""
    reason = (
        "a threshold needs an explicit number after the comparator "
        f"('{prims.comparators[0].text} …'); guardrails give no prior for a threshold value"
    )
    for comp in prims.comparators:
        if comp.text in _POSTFIX_COMPARATORS:
            number = next((n for n in scan.numbers if n.index == comp.start - 1), None)
        else:
            number = next((n for n in scan.numbers if comp.end <= n.index < comp.end + _NUMBER_REACH), None)
        if number is None:
            continue
        if (
            comp.text in g.read_as_amount
            and prims.movement
            and (
                number.percent
                or _AGREES.get((comp.phrase.direction if comp.phrase else None) or "") not in (prims.movement, None)
            )
        ):
            # "rises over 5%", "drops more than 5%": an amount of change, not a level
            reason = f"'{comp.text} {number.text}' after a movement word reads as an amount of change, not a level"
            continue
        return comp, number
    return reason


def _fill_threshold(
    prims: Primitives, scan: Scan, g: Guardrails, sev: Severity, namespace: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    pair = _threshold_number(prims, scan, g)
    if isinstance(pair, str):
        raise Reject(pair)
    comp, number = pair
    assert comp.phrase is not None
    value = clean_number(number.value)
    _check_range(g, "threshold.value", value, f"threshold value {number.text}")
    return (
        {"direction": comp.phrase.direction, "value": value},
        {
            "direction": {"source": "intent word", "word": comp.text},
            "value": {
                "source": "explicit",
                "text": number.text,
                **({"note": "percent read as a fraction"} if number.percent else {}),
            },
        },
    )


def _amount(scan: Scan, used: set[int]) -> Number | None:
    free = [n for n in scan.numbers if n.index not in used]
    return next((n for n in free if n.percent), None) or (free[0] if free else None)


def _fill_change(
    prims: Primitives, scan: Scan, g: Guardrails, sev: Severity, namespace: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    prov: dict[str, Any] = {"direction": {"source": "intent word", "words": prims.movement_words}}
    number = _amount(scan, set())
    if number is not None:
        value: Any = clean_float(abs(number.value))
        prov["value"] = {"source": "explicit", "text": number.text}
        what = f"change of {number.text}" + ("" if number.percent else " (a plain number is read as a fraction)")
    else:
        value, prov["value"] = _scaled_prior(g, "change", "value", sev, namespace)
        what = f"change value {value} from prior {prov['value']['prior']}"
    _check_range(g, "change.value", value, what)
    window, prov["window"] = _window(scan, g, "change", sev)
    return {"direction": prims.movement, "value": value, "window": window}, prov


def _fill_anomaly(
    prims: Primitives, scan: Scan, g: Guardrails, sev: Severity, namespace: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    prov: dict[str, Any] = {}
    if scan.zscores:
        zscore: Any = clean_float(abs(scan.zscores[0].value))
        prov["zscore"] = {"source": "explicit", "text": scan.zscores[0].text}
    else:
        zscore, prov["zscore"] = _scaled_prior(g, "anomaly", "zscore", sev, namespace)
    _check_range(g, "anomaly.zscore", zscore, f"z-score {zscore}")
    window, prov["window"] = _window(scan, g, "anomaly", sev)
    return {"zscore": float(zscore), "window": window}, prov


def _fill_absence(
    prims: Primitives, scan: Scan, g: Guardrails, sev: Severity, namespace: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    window, prov = _window(scan, g, "absence", sev)
    return {"window": window}, {"window": prov}


_FILLERS = {"threshold": _fill_threshold, "change": _fill_change, "anomaly": _fill_anomaly, "absence": _fill_absence}


def applicable(strategy: str, prims: Primitives) -> bool:
    if strategy == "threshold":
        return bool(prims.comparators)
    if strategy == "change":
        return prims.movement is not None
    if strategy == "anomaly":
        return bool(prims.anomaly_words)
    return bool(prims.absence_words)


def select_and_fill(
    prims: Primitives, scan: Scan, g: Guardrails, sev: Severity, namespace: str | None
) -> Filled | list[dict[str, str]]:
    """The first strategy in priority order that fills; or every rejection when none does."""
    rejected: list[dict[str, str]] = []
    for strategy in g.priority:
        if not applicable(strategy, prims):
            continue
        try:
            params, prov = _FILLERS[strategy](prims, scan, g, sev, namespace)
        except Reject as exc:
            rejected.append({"strategy": strategy, "reason": str(exc)})
            continue
        notes = []
        if strategy == "threshold" and scan.windows:
            notes.append(f"window '{scan.windows[0].text}' ignored: a threshold compares the latest value")
        return Filled(strategy, params, prov, sev, rejected, notes)
    return rejected


def describe(strategy: str, params: dict[str, Any], metric: str) -> str:
    """One sentence saying exactly when the condition fires (entity-free: the Task holds the scope)."""
    subject = metric
    if strategy == "threshold":
        word = "at or above" if params["direction"] == "above" else "at or below"
        return f"Fires when the latest {subject} is {word} {clean_number(params['value']):g}."
    if strategy == "change":
        verb = {"increase": "rises", "decrease": "falls", "any": "moves either way"}[params["direction"]]
        return (
            f"Fires when {subject} {verb} by at least {fraction_words(params['value'])} "
            f"compared with its value {window_words(params['window'])} earlier."
        )
    if strategy == "anomaly":
        return (
            f"Fires when the latest {subject} is at least {params['zscore']:g} standard deviations "
            f"from its mean over the previous {window_words(params['window'])}."
        )
    return f"Fires when no {subject} signal has arrived for {window_words(params['window'])} or more."
