"""`Guard.verify`: the one decision every tool call passes before it runs.

Checks run in this fixed order; the names of those that pass are recorded (in order) in the
decision and then in the certificate:

1. `tool_known` - the tool is in the catalog; then `arguments_valid` - the arguments match the
   tool's schema (required names present, strings are strings, no unknown names). A failure here
   stops verification: nothing further can be judged about a call that cannot run.
2. `permission_held` - the tool's required permission is among the effective permissions.
3. `budget_available` - the execution is not already over budget (`spent_cents > budget_cents`).
4. `rule:<id>` for each rule of the policy, in the policy's order.

Steps 2-4 all run even after a failure, so the decision lists every violation at once. The
decision halts the run when any violation's rule is in the policy's `halting` set.
Deterministic, no I/O, no clock: the same call and context always give the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guard.catalog import TOOL_PERMISSIONS, TOOL_SPECS_BY_NAME
from guard.model import Decision, ToolCall, VerifyContext, violation


def _argument_problems(tool: str, arguments: Any) -> str | None:
    """Why `arguments` do not fit the tool's JSON schema, or None when they do."""
    if not isinstance(arguments, Mapping):
        return f"{tool} arguments must be a JSON object"
    schema = TOOL_SPECS_BY_NAME[tool]["parameters"]
    properties = schema["properties"]
    for name in schema["required"]:
        if name not in arguments:
            return f"{tool} requires argument {name!r}"
    for name, value in arguments.items():
        prop = properties.get(name)
        if prop is None:
            return f"{tool} does not take argument {name!r}"
        if prop["type"] == "string" and not isinstance(value, str):
            return f"{tool} argument {name!r} must be a string"
        if prop["type"] == "array" and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            return f"{tool} argument {name!r} must be a list of strings"
    return None


def verify(call: ToolCall, context: VerifyContext) -> Decision:
    """Decide whether `call` may run under `context` (see the module docstring for the order)."""
    policy = context.policy
    permission = TOOL_PERMISSIONS.get(call.tool) if isinstance(call.tool, str) else None
    if permission is None:
        v = violation("unknown_tool", "unknown_tool", f"Unknown tool {call.tool!r}")
        return Decision(call.tool, None, False, [], [v], "unknown_tool" in policy.halting)
    checks = ["tool_known"]
    problem = _argument_problems(call.tool, call.arguments)
    if problem is not None:
        v = violation("invalid_arguments", "invalid_arguments", problem, permission)
        return Decision(call.tool, permission, False, checks, [v], "invalid_arguments" in policy.halting)
    checks.append("arguments_valid")

    violations: list[dict[str, str]] = []
    if permission in context.effective_permissions:
        checks.append("permission_held")
    else:
        violations.append(
            violation(
                "permission_denied",
                "permission_not_granted",
                f"{call.tool} requires {permission}, which this execution was not granted",
                permission,
            )
        )
    if context.spent_cents > context.budget_cents:
        violations.append(
            violation(
                "budget_exceeded",
                "budget_exceeded",
                f"Spent {context.spent_cents} cents of a {context.budget_cents} cent budget",
                permission,
            )
        )
    else:
        checks.append("budget_available")
    for rule_id, check in policy.checks:
        found = check(call, context)
        if found:
            violations.extend(found)
        else:
            checks.append(f"rule:{rule_id}")
    halt = any(v["rule"] in policy.halting for v in violations)
    return Decision(call.tool, permission, not violations, checks, violations, halt)


class Guard:
    """Namespace for the verify step: `Guard.verify(call, context)` (also works on an instance)."""

    verify = staticmethod(verify)
