"""``validate_guardrails``: every problem in a guardrails document, as readable strings.

A workspace override is checked with this before it is stored, so the compiler never meets a
document it cannot use. The checks mirror what ``compiler/guardrails.py`` relies on.
"""

from __future__ import annotations

import math
from typing import Any

from compiler.model import DIRECTION_FAMILY, RANGED_PARAMS, SCALABLE_PARAMS, STRATEGIES, STRATEGY_PARAMS
from compiler.units import parse_window

REQUIRED_KEYS = (
    "version",
    "severity",
    "strategy_priority",
    "priors",
    "bias_rules",
    "metrics",
    "directions",
    "ranges",
    "plan",
    "agent",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _phrases(value: Any, where: str, errors: list[str]) -> list[str]:
    if not isinstance(value, list) or not value:
        errors.append(f"{where} must be a non-empty list of phrases")
        return []
    good = [p for p in value if isinstance(p, str) and p.strip()]
    if len(good) != len(value):
        errors.append(f"{where} must contain only non-empty strings")
    return good


def _check_severity(doc: dict[str, Any], errors: list[str]) -> list[str]:
    sev = doc.get("severity")
    if not isinstance(sev, dict):
        errors.append("severity must be an object")
        return []
    levels = sev.get("levels")
    if (
        not isinstance(levels, list)
        or not levels
        or not all(isinstance(x, str) and x for x in levels)
        or len(set(levels)) != len(levels)
    ):
        errors.append("severity.levels must be a non-empty list of distinct names, least severe first")
        return []
    if sev.get("default") not in levels:
        errors.append(f"severity.default must be one of {levels}")
    vocab = sev.get("vocabulary")
    if not isinstance(vocab, dict):
        errors.append("severity.vocabulary must be an object of word → level")
    else:
        for word, level in vocab.items():
            if not word.strip():
                errors.append("severity.vocabulary has an empty word")
            if level not in levels:
                errors.append(f"severity.vocabulary[{word!r}] = {level!r} is not one of {levels}")
    return levels


def _check_ranges(doc: dict[str, Any], errors: list[str]) -> set[int]:
    ranges = doc.get("ranges")
    if not isinstance(ranges, dict):
        errors.append("ranges must be an object")
        return set()
    for key in RANGED_PARAMS:
        rng = ranges.get(key)
        if not isinstance(rng, dict) or not _is_number(rng.get("min")) or not _is_number(rng.get("max")):
            errors.append(f"ranges.{key} must be an object with numeric min and max")
        elif rng["min"] >= rng["max"]:
            errors.append(f"ranges.{key}.min must be below max")
        elif any(not isinstance(rng.get(k, True), bool) for k in ("min_inclusive", "max_inclusive")):
            errors.append(f"ranges.{key}.min_inclusive/max_inclusive must be booleans")
    windows = ranges.get("windows")
    seconds: set[int] = set()
    if not isinstance(windows, list) or not windows:
        errors.append("ranges.windows must be a non-empty list of windows such as '1h'")
        return seconds
    for window in windows:
        try:
            seconds.add(parse_window(window))
        except ValueError as exc:
            errors.append(f"ranges.windows: {exc}")
    return seconds


def _in_range(doc: dict[str, Any], key: str, value: Any) -> bool:
    ranges = doc.get("ranges")
    rng = ranges.get(key) if isinstance(ranges, dict) else None
    if (
        not isinstance(rng, dict)
        or not _is_number(value)
        or not _is_number(rng.get("min"))
        or not _is_number(rng.get("max"))
    ):
        return False
    low_ok = value >= rng["min"] if rng.get("min_inclusive", True) else value > rng["min"]
    high_ok = value <= rng["max"] if rng.get("max_inclusive", True) else value < rng["max"]
    return bool(low_ok and high_ok)


def _check_priors(doc: dict[str, Any], levels: list[str], windows: set[int], errors: list[str]) -> None:
    priors = doc.get("priors")
    if not isinstance(priors, dict):
        errors.append("priors must be an object keyed 'strategy.severity'")
        return
    for key, params in priors.items():
        strategy, _, level = key.partition(".")
        if strategy not in STRATEGIES or level not in levels:
            errors.append(f"priors.{key}: key must be '<strategy>.<level>' with a known strategy and level")
            continue
        if not isinstance(params, dict):
            errors.append(f"priors.{key} must be an object")
            continue
        for name, value in params.items():
            if name not in STRATEGY_PARAMS[strategy] or name == "direction":
                errors.append(f"priors.{key}.{name} is not a parameter a prior may set for {strategy}")
            elif strategy == "threshold" and name == "value":
                errors.append(f"priors.{key}.value: a threshold needs an explicit number, never a prior")
            elif name == "window":
                try:
                    if parse_window(value) not in windows:
                        errors.append(f"priors.{key}.window {value!r} is not in ranges.windows")
                except ValueError as exc:
                    errors.append(f"priors.{key}.window: {exc}")
            elif not _in_range(doc, f"{strategy}.{name}", value):
                errors.append(f"priors.{key}.{name} = {value!r} is outside ranges.{strategy}.{name}")
    for strategy in doc.get("strategy_priority") or ():
        if strategy == "threshold" or strategy not in STRATEGY_PARAMS:
            continue
        for level in levels:
            needed = [p for p in STRATEGY_PARAMS[strategy] if p != "direction"]
            have = priors.get(f"{strategy}.{level}")
            if not isinstance(have, dict) or any(p not in have for p in needed):
                errors.append(f"priors.{strategy}.{level} must set {needed}")


def _check_bias(doc: dict[str, Any], levels: list[str], metrics: set[str], errors: list[str]) -> None:
    bias = doc.get("bias_rules")
    if not isinstance(bias, dict):
        errors.append("bias_rules must be an object")
        return
    sensitivity = bias.get("sensitivity", {})
    if not isinstance(sensitivity, dict):
        errors.append("bias_rules.sensitivity must be an object")
        sensitivity = {}
    for name, rule in sensitivity.items():
        ok = (
            isinstance(rule, dict)
            and len(rule) == 1
            and (
                (isinstance(rule.get("shift"), int) and not isinstance(rule.get("shift"), bool))
                or rule.get("set") in levels
            )
        )
        if name not in levels or not ok:
            errors.append(
                f"bias_rules.sensitivity.{name} must be a level mapping to {{'shift': int}} or {{'set': level}}"
            )
    namespaces = bias.get("namespaces", {})
    if not isinstance(namespaces, dict):
        errors.append("bias_rules.namespaces must be an object")
        return
    for name, rule in namespaces.items():
        if not isinstance(rule, dict) or set(rule) - {"scale", "default_metric"}:
            errors.append(f"bias_rules.namespaces.{name} may only set 'scale' and 'default_metric'")
            continue
        scale = rule.get("scale") or {}
        if not isinstance(scale, dict):
            errors.append(f"bias_rules.namespaces.{name}.scale must be an object")
            scale = {}
        for param, factor in scale.items():
            if param not in SCALABLE_PARAMS or not _is_number(factor) or factor <= 0:
                errors.append(
                    f"bias_rules.namespaces.{name}.scale.{param} must be a positive factor for "
                    f"one of {list(SCALABLE_PARAMS)}"
                )
        if "default_metric" in rule and rule["default_metric"] not in metrics:
            errors.append(f"bias_rules.namespaces.{name}.default_metric is not a known metric")


def _check_vocabularies(doc: dict[str, Any], errors: list[str]) -> set[str]:
    from compiler.text import normalize

    seen: dict[str, str] = {}
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        errors.append("metrics must be an object of metric → synonyms")
        metrics = {}
    for metric, synonyms in metrics.items():
        for phrase in _phrases(synonyms, f"metrics.{metric}", errors):
            key = normalize(phrase)
            if seen.get(key, metric) != metric:
                errors.append(f"metric phrase {phrase!r} maps to both {seen[key]!r} and {metric!r}")
            seen[key] = metric
    directions = doc.get("directions")
    if not isinstance(directions, dict) or set(directions) != set(DIRECTION_FAMILY):
        errors.append(f"directions must have exactly the keys {sorted(DIRECTION_FAMILY)}")
        directions = {}
    owner: dict[str, str] = {}
    for direction, words in directions.items():
        for phrase in _phrases(words, f"directions.{direction}", errors):
            key = normalize(phrase)
            if owner.get(key, direction) != direction:
                errors.append(f"direction phrase {phrase!r} is in both {owner[key]!r} and {direction!r}")
            owner[key] = direction
    defaults = doc.get("default_metric") or {}
    if not isinstance(defaults, dict):
        errors.append("default_metric must be an object of strategy → metric")
        defaults = {}
    for family, metric in defaults.items():
        if family not in STRATEGIES or metric not in metrics:
            errors.append(f"default_metric.{family} must map a strategy to a known metric")
    return set(metrics)


def _check_rest(doc: dict[str, Any], windows: set[int], errors: list[str]) -> None:
    plan = doc.get("plan")
    if not isinstance(plan, dict):
        errors.append("plan must be an object")
    else:
        try:
            if parse_window(plan.get("threshold_lookback")) not in windows:
                errors.append("plan.threshold_lookback is not in ranges.windows")
        except ValueError as exc:
            errors.append(f"plan.threshold_lookback: {exc}")
        for key in ("anomaly_min_points", "change_min_points"):
            value = plan.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= 10000:
                errors.append(f"plan.{key} must be an integer in [2, 10000]")
        if not _is_number(plan.get("tolerance")) or not 0 <= plan["tolerance"] < 0.01:
            errors.append("plan.tolerance must be a number in [0, 0.01)")
    calibration = doc.get("calibration", {})
    if not isinstance(calibration, dict):
        errors.append("calibration must be an object")
    else:
        for key, rule in calibration.items():
            kind, raw = next(iter(rule.items())) if isinstance(rule, dict) and len(rule) == 1 else ("", None)
            amount = float(raw) if isinstance(raw, int | float) and _is_number(raw) else 0.0
            ok = key in RANGED_PARAMS and (
                (kind == "factor" and amount > 1)
                or (kind == "step" and amount > 0)
                or (kind == "fraction" and 0 < amount < 1)
            )
            if not ok:
                errors.append(f"calibration.{key} must be {{'factor': >1}}, {{'step': >0}} or {{'fraction': (0, 1)}}")
    number_words = doc.get("number_words", {})
    amounts = number_words.get("comparators_read_as_amount", []) if isinstance(number_words, dict) else None
    if not isinstance(amounts, list) or not all(isinstance(p, str) and p.strip() for p in amounts):
        errors.append("number_words.comparators_read_as_amount must be a list of phrases")
    agent = doc.get("agent")
    if not isinstance(agent, dict):
        errors.append("agent must be an object")
        return
    policies = agent.get("compliance_policies")
    if not isinstance(policies, list) or not policies or not all(isinstance(p, str) for p in policies):
        errors.append("agent.compliance_policies must be a non-empty list of names")
        policies = []
    if agent.get("default_policy") not in policies:
        errors.append("agent.default_policy must be one of agent.compliance_policies")
    aliases = agent.get("aliases") or {}
    for alias, target in aliases.items() if isinstance(aliases, dict) else [("?", None)]:
        if target not in policies:
            errors.append(f"agent.aliases.{alias} points at unknown policy {target!r}")
    budget = agent.get("budget_cents")
    if (
        not isinstance(budget, dict)
        or not all(isinstance(budget.get(k), int) for k in ("default", "min", "max"))
        or not budget["min"] <= budget["default"] <= budget["max"]
    ):
        errors.append("agent.budget_cents must have integers min <= default <= max")


def validate_guardrails(doc: Any) -> list[str]:
    """Every problem found in ``doc``; an empty list means the compiler can use it."""
    if not isinstance(doc, dict):
        return ["guardrails document must be a JSON object"]
    errors = [f"missing required key {key!r}" for key in REQUIRED_KEYS if key not in doc]
    if errors:
        return errors
    version = doc["version"]
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        errors.append("version must be a non-empty string of at most 64 characters")
    priority = doc["strategy_priority"]
    if (
        not isinstance(priority, list)
        or not priority
        or len(set(map(str, priority))) != len(priority)
        or any(s not in STRATEGIES for s in priority)
    ):
        errors.append(f"strategy_priority must be a non-empty list of distinct strategies from {list(STRATEGIES)}")
        doc = {**doc, "strategy_priority": []}
    levels: list[str] = []
    windows: set[int] = set()
    metrics: set[str] = set()
    # Each section is checked on its own; a value of a shape no check foresaw (a list where a
    # name belongs, say) is reported as an error for that section instead of escaping as a crash.
    sections = [
        ("severity", lambda: levels.extend(_check_severity(doc, errors))),
        ("ranges", lambda: windows.update(_check_ranges(doc, errors))),
        ("metrics/directions", lambda: metrics.update(_check_vocabularies(doc, errors))),
        ("priors", lambda: _check_priors(doc, levels, windows, errors) if levels else None),
        ("bias_rules", lambda: _check_bias(doc, levels, metrics, errors) if levels else None),
        ("plan/calibration/agent", lambda: _check_rest(doc, windows, errors)),
    ]
    for name, check in sections:
        try:
            check()
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            errors.append(f"{name}: malformed value ({type(exc).__name__}: {exc})")
    return errors
