"""Stage 7: validate a compiled condition and action against the guardrails, independently of
how they were produced. ``check_params`` is shared with calibration, so a calibrated version
meets exactly the same rules as a compiled one.
"""

from __future__ import annotations

import math
from typing import Any

from compiler.evaluate import evaluate_plan
from compiler.guardrails import Guardrails
from compiler.model import STRATEGY_DIRECTIONS, STRATEGY_PARAMS
from compiler.units import parse_window


def check_params(strategy: str, params: Any, g: Guardrails) -> list[str]:
    """Problems with ``params`` for ``strategy`` under ``g``; empty when they are valid."""
    if strategy not in STRATEGY_PARAMS:
        return [f"unknown strategy {strategy!r}"]
    if not isinstance(params, dict):
        return ["params must be an object"]
    expected = STRATEGY_PARAMS[strategy]
    problems = [f"{name!r} is not a parameter of {strategy}" for name in sorted(set(params) - set(expected))]
    problems += [f"{strategy} needs {name!r}" for name in expected if name not in params]
    for name in expected:
        if name not in params:
            continue
        value = params[name]
        if name == "direction":
            if value not in STRATEGY_DIRECTIONS[strategy]:
                problems.append(f"{strategy} direction must be one of {list(STRATEGY_DIRECTIONS[strategy])}")
        elif name == "window":
            try:
                seconds = parse_window(value)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if not g.window_allowed(seconds):
                problems.append(f"window {value!r} is not one of {', '.join(g.windows)}")
        else:
            rng = g.ranges[f"{strategy}.{name}"]
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                problems.append(f"{strategy}.{name} must be a finite number")
            elif not rng.contains(value):
                problems.append(f"{strategy}.{name} = {value:g} is outside {rng.text()}")
    return problems


def validate_compiled(condition: dict[str, Any], action: dict[str, Any], g: Guardrails) -> dict[str, Any]:
    """``{"valid": bool, "checks": [{"check", "ok", "detail"}]}`` for a condition and action."""
    strategy = condition["strategy"]["type"]
    params = condition["strategy"]["params"]
    checks: list[dict[str, Any]] = []

    def add(name: str, problems: list[str], ok_detail: str) -> None:
        checks.append({"check": name, "ok": not problems, "detail": "; ".join(problems) or ok_detail})

    add(
        "strategy_allowed",
        [] if strategy in g.priority else [f"{strategy} is not in strategy_priority"],
        f"{strategy} is in the guardrails priority order",
    )
    add(
        "params_in_range",
        check_params(strategy, params, g),
        "every parameter is present and inside the guardrails ranges",
    )
    add(
        "metric_known",
        [] if condition["metric"] in g.metrics else [f"unknown metric {condition['metric']!r}"],
        f"{condition['metric']} is in the metric vocabulary",
    )
    try:
        evaluate_plan(condition["plan"], [], 0.0)
        plan_problems: list[str] = []
    except Exception as exc:  # any failure here means the plan is not evaluable
        plan_problems = [f"plan does not evaluate: {type(exc).__name__}"]
    add("plan_evaluable", plan_problems, "the plan evaluates over an empty series")
    add(
        "action_bound",
        [] if action.get("type") in ("notification", "webhook", "agent") else ["no action"],
        f"bound to a {action.get('type')} action",
    )
    return {"valid": all(c["ok"] for c in checks), "checks": checks}
