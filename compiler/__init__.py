"""Warden's intent compiler: plain-language monitoring intents → deterministic, evaluable conditions.

Pure Python (stdlib only), no I/O on the default path. The public surface:

* ``compile_intent(intent, entity_scope, delivery, constraints=None, guardrails=None, *,
  endpoint_check=None, classifier=None) -> Compiled`` (raises ``CompileError``)
* ``explain(compiled_or_condition, guardrails=None) -> dict``
* ``calibrate(condition, *, params=None, feedback=None, guardrails=None) -> dict`` (new params)
  and ``calibrated_condition(condition, new_params, *, feedback=None, guardrails=None) -> dict``
* ``evaluate_plan(plan, series, now) -> Evaluation``
* ``default_guardrails()``, ``load_guardrails(doc)``, ``validate_guardrails(doc) -> list[str]``
* ``check_endpoint(url, *, allow_private=False) -> str | None``
"""

from compiler.binding import check_endpoint
from compiler.calibrate import calibrate, calibrated_condition
from compiler.errors import (
    ACTION_BINDING_FAILED,
    NO_PRIMITIVE,
    NO_VALID_STRATEGY,
    CalibrationError,
    CompileError,
    GuardrailsError,
)
from compiler.evaluate import Evaluation, build_plan, evaluate_plan
from compiler.explain import explain
from compiler.guardrails import Guardrails, default_guardrails, load_guardrails
from compiler.pipeline import Compiled, compile_intent
from compiler.validation import validate_guardrails

__all__ = [
    "ACTION_BINDING_FAILED",
    "NO_PRIMITIVE",
    "NO_VALID_STRATEGY",
    "CalibrationError",
    "CompileError",
    "Compiled",
    "Evaluation",
    "Guardrails",
    "GuardrailsError",
    "build_plan",
    "calibrate",
    "calibrated_condition",
    "check_endpoint",
    "compile_intent",
    "default_guardrails",
    "evaluate_plan",
    "explain",
    "load_guardrails",
    "validate_guardrails",
]
