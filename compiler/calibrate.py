"""Calibration: new parameters for a condition, from explicit values or from feedback.

``too_noisy`` means the condition fires too often, so it moves one step *less* sensitive: a
larger change fraction, a larger z-score, a longer absence window, a threshold further from
the current values (higher for ``above``, lower for ``below``). ``too_quiet`` moves one step the
other way. A step goes to the neighbouring severity's prior value (scaled by the namespace
factor the condition was compiled with); past the last prior it uses the guardrails
``calibration`` rule (×/÷ ``factor``, ± ``step``, or the next allowed window), clamped to the
allowed range. A threshold moves by ``fraction`` of its magnitude (5%: 200 → 210 or 190).
Nothing is ever edited in place: the caller stores the result as a new condition version.
"""

from __future__ import annotations

import copy
from typing import Any

from compiler.errors import CalibrationError
from compiler.evaluate import build_plan
from compiler.guardrails import Guardrails, load_guardrails
from compiler.model import STRATEGY_PARAMS
from compiler.strategies import describe
from compiler.units import clean_float, clean_number, format_window, parse_window
from compiler.validate import check_params

FEEDBACK = ("too_noisy", "too_quiet")
_KNOB = {"change": "value", "anomaly": "zscore", "absence": "window", "threshold": "value"}


def _strategy(condition: Any) -> tuple[str, dict[str, Any]]:
    try:
        strategy = condition["strategy"]["type"]
        params = dict(condition["strategy"]["params"])
    except (KeyError, TypeError):
        raise CalibrationError("condition must carry strategy.type and strategy.params") from None
    if strategy not in STRATEGY_PARAMS:
        raise CalibrationError(f"unknown strategy {strategy!r}")
    return strategy, params


def _scale(condition: dict[str, Any], strategy: str, knob: str) -> float:
    prov = (condition.get("provenance") or {}).get(knob) or {}
    factor = 1.0
    for step in prov.get("bias") or ():
        if "factor" in step:
            factor *= float(step["factor"])
    return factor


def _measure(knob: str, value: Any) -> float:
    return float(parse_window(value)) if knob == "window" else float(value)


def _ladder(g: Guardrails, strategy: str, knob: str, factor: float) -> list[Any]:
    values = []
    for level in g.levels:
        prior = g.priors.get(f"{strategy}.{level}") or {}
        if knob in prior:
            values.append(prior[knob] if knob == "window" else clean_float(float(prior[knob]) * factor))
    return sorted(set(values), key=lambda v: _measure(knob, v))


def _beyond(g: Guardrails, strategy: str, knob: str, current: Any, harder: bool) -> Any:
    """One calibration step past the priors, clamped to the allowed range."""
    if knob == "window":
        now = parse_window(current)
        allowed = sorted(g.window_seconds)
        nxt = [s for s in allowed if s > now] if harder else [s for s in allowed if s < now][::-1]
        if not nxt:
            raise CalibrationError(
                f"window {current} is already the {'longest' if harder else 'shortest'} allowed", "out_of_range"
            )
        return format_window(nxt[0])
    rule = g.calibration.get(f"{strategy}.{knob}") or {"factor": 1.5}
    rng = g.ranges[f"{strategy}.{knob}"]
    value = float(current)
    if "step" in rule:
        new = value + rule["step"] if harder else value - rule["step"]
    elif "fraction" in rule:
        new = value * (1 + rule["fraction"]) if harder else value * (1 - rule["fraction"])
    else:
        new = value * rule["factor"] if harder else value / rule["factor"]
    if not rng.contains(new):
        edge = rng.high if harder else rng.low
        inclusive = rng.high_inclusive if harder else rng.low_inclusive
        if not inclusive or edge == value:
            raise CalibrationError(
                f"{strategy}.{knob} = {value:g} cannot move further within {rng.text()}", "out_of_range"
            )
        new = edge
    return clean_float(new)


def _threshold_step(g: Guardrails, params: dict[str, Any], harder: bool) -> Any:
    value = float(params["value"])
    if value == 0:
        raise CalibrationError("a threshold of 0 cannot be moved by a fraction; pass params instead")
    step = abs(value) * float((g.calibration.get("threshold.value") or {}).get("fraction", 0.05))
    up = harder == (params["direction"] == "above")
    new = clean_number(value + step if up else value - step)
    rng = g.ranges["threshold.value"]
    if not rng.contains(new):
        raise CalibrationError(f"threshold {new:g} would leave {rng.text()}", "out_of_range")
    return new


def calibrate(
    condition: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    feedback: str | None = None,
    guardrails: dict[str, Any] | Guardrails | None = None,
) -> dict[str, Any]:
    """The new strategy params for ``condition`` (exactly one of ``params`` or ``feedback``).

    ``params`` may be partial; they are merged over the current ones. Raises CalibrationError
    (``code`` ``invalid_calibration`` or ``out_of_range``) for a foreign or missing parameter,
    a value outside the guardrails, or feedback that cannot move any further.
    """
    g = load_guardrails(guardrails)
    strategy, current = _strategy(condition)
    invalid = check_params(strategy, current, g)
    if invalid:
        raise CalibrationError("the condition's current params are invalid: " + "; ".join(invalid))
    if (params is None) == (feedback is None):
        raise CalibrationError("pass exactly one of params or feedback")
    if params is not None:
        if not isinstance(params, dict) or not params:
            raise CalibrationError("params must be a non-empty object")
        foreign = sorted(set(params) - set(STRATEGY_PARAMS[strategy]))
        if foreign:
            raise CalibrationError(
                f"{', '.join(map(repr, foreign))} not a parameter of {strategy} "
                f"(expected {', '.join(STRATEGY_PARAMS[strategy])})"
            )
        new = {**current, **params}
        if "window" in params and isinstance(params["window"], str):
            try:
                new["window"] = format_window(parse_window(params["window"]))
            except ValueError as exc:
                raise CalibrationError(str(exc), "out_of_range") from None
    else:
        if feedback not in FEEDBACK:
            raise CalibrationError(f"feedback must be one of {', '.join(FEEDBACK)}")
        harder = feedback == "too_noisy"
        knob = _KNOB[strategy]
        new = dict(current)
        if strategy == "threshold":
            new["value"] = _threshold_step(g, current, harder)
        else:
            now = _measure(knob, current[knob])
            ladder = _ladder(g, strategy, knob, _scale(condition, strategy, knob))
            steps = (
                [v for v in ladder if _measure(knob, v) > now]
                if harder
                else [v for v in reversed(ladder) if _measure(knob, v) < now]
            )
            new[knob] = steps[0] if steps else _beyond(g, strategy, knob, current[knob], harder)
    problems = check_params(strategy, new, g)
    if problems:
        raise CalibrationError("; ".join(problems), "out_of_range")
    return new


def calibrated_condition(
    condition: dict[str, Any],
    new_params: dict[str, Any],
    *,
    feedback: str | None = None,
    guardrails: dict[str, Any] | Guardrails | None = None,
) -> dict[str, Any]:
    """A new condition body with ``new_params`` (from ``calibrate``): strategy, plan, provenance."""
    g = load_guardrails(guardrails)
    strategy, old = _strategy(condition)
    problems = check_params(strategy, new_params, g)
    if problems:
        raise CalibrationError("; ".join(problems), "out_of_range")
    new = copy.deepcopy(condition)
    new["strategy"] = {"type": strategy, "params": dict(new_params)}
    provenance = new.setdefault("provenance", {})
    for name, value in new_params.items():
        if old.get(name) != value:
            scale = [b for b in (provenance.get(name) or {}).get("bias") or () if "factor" in b]
            provenance[name] = {
                "source": "calibration",
                "previous": old.get(name),
                "bias": scale,
                **({"feedback": feedback} if feedback else {"explicit": True}),
            }
    knob = _KNOB[strategy]
    for level in g.levels:
        prior = (g.priors.get(f"{strategy}.{level}") or {}).get(knob)
        if prior is not None and knob != "window":
            prior = clean_float(float(prior) * _scale(condition, strategy, knob))
        if prior is not None and prior == new_params.get(knob):
            new["severity"] = level
    new["description"] = describe(strategy, new_params, new["metric"])
    new["plan"] = build_plan(strategy, new_params, new["metric"], g.plan)
    new["guardrails_version"] = g.version
    return new
