"""Fixed names of the compiler: strategies, their parameters, direction families.

These are code, not guardrails: a workspace may retune words, priors and ranges, but a new
strategy needs an evaluator, so it is added here and in ``compiler/evaluate.py`` together.
"""

from __future__ import annotations

STRATEGIES = ("threshold", "change", "anomaly", "absence")

#: Parameters each strategy takes, in display order.
STRATEGY_PARAMS: dict[str, tuple[str, ...]] = {
    "threshold": ("direction", "value"),
    "change": ("direction", "value", "window"),
    "anomaly": ("zscore", "window"),
    "absence": ("window",),
}

#: Values a ``direction`` parameter may take per strategy.
STRATEGY_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "threshold": ("above", "below"),
    "change": ("increase", "decrease", "any"),
}

#: Direction-vocabulary keys, and which strategy each one makes applicable.
DIRECTION_FAMILY: dict[str, str] = {
    "increase": "change",
    "decrease": "change",
    "any": "change",
    "above": "threshold",
    "below": "threshold",
    "anomaly": "anomaly",
    "absence": "absence",
}
DIRECTIONS = tuple(DIRECTION_FAMILY)

#: Numeric parameters that have an allowed range in ``guardrails.ranges``.
RANGED_PARAMS = ("change.value", "anomaly.zscore", "threshold.value")

#: Parameters a namespace may scale.
SCALABLE_PARAMS = ("change.value", "anomaly.zscore")

STAGES = (
    "classify",
    "resolve_primitives",
    "select_strategy",
    "fill_parameters",
    "generate_concept_condition",
    "bind_action",
    "validate",
    "compile",
)
