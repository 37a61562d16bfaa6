"""Errors raised by the intent compiler.

``CompileError.code`` is a stable machine string that the API maps to a 422:
``no_primitive``, ``no_valid_strategy`` or ``action_binding_failed``. ``trace`` carries the
stages that ran before the failure so a caller can show where resolution stopped.
"""

from __future__ import annotations

from typing import Any

NO_PRIMITIVE = "no_primitive"
NO_VALID_STRATEGY = "no_valid_strategy"
ACTION_BINDING_FAILED = "action_binding_failed"
COMPILE_ERROR_CODES = (NO_PRIMITIVE, NO_VALID_STRATEGY, ACTION_BINDING_FAILED)


class CompileError(Exception):
    """The intent was understood as JSON but could not be compiled into a Task."""

    def __init__(self, code: str, message: str, trace: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trace: list[dict[str, Any]] = list(trace or [])

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "trace": [dict(t) for t in self.trace]}

    def __repr__(self) -> str:
        return f"CompileError({self.code!r}, {self.message!r})"


class CalibrationError(CompileError, ValueError):
    """A calibration request would leave the guardrails' ranges or names a foreign parameter."""

    def __init__(self, message: str, code: str = "invalid_calibration") -> None:
        super().__init__(code, message, [])


class GuardrailsError(ValueError):
    """A guardrails document failed validation; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        shown = "; ".join(self.errors[:5]) + ("; …" if len(self.errors) > 5 else "")
        super().__init__(f"invalid guardrails document: {shown}")
