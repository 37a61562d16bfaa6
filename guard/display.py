"""What may be shown of an execution's data outside its record: events (stored and streamed),
webhook bodies, workflow views. Under a policy that keeps PHI in (its ``phi_unredacted`` rule,
as hipaa has), or for a run that carries the ``phi`` label (it read or was given PHI, whatever its
own policy), every string shown there is redacted the way ``redact_text`` would redact it, with
the names the run has read from the record; otherwise it is shown as is.

Pure: no I/O. The record itself (``GET /api/v1/executions/{id}``) keeps the run's own output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from guard.detectors import redact
from guard.policy import Policy, UnknownPolicy, load_policy

# Labels that follow the data: output derived from content carrying them carries them too.
SENSITIVE_LABELS = ("financial", "phi", "privileged")

FAILED_REDACTION = "[REDACTED]"


def redacts(policy: Policy | str | None, labels: Iterable[Any] = ()) -> bool:
    """Whether a run under ``policy`` (a Policy or its name) carrying ``labels`` shows its strings
    redacted outside the record."""
    if "phi" in labels:
        return True
    if policy is None:
        return False
    if isinstance(policy, str):
        try:
            policy = load_policy(policy)
        except UnknownPolicy:
            return True  # a record of a policy this build does not know: fail closed
    return any(rule.get("id") == "phi_unredacted" for rule in policy.rules)


def redact_text(text: str, record_names: Iterable[str] = ()) -> str:
    """``text`` with its PHI identifiers replaced (``[REDACTED]`` if redaction cannot finish)."""
    try:
        return redact(text, tuple(record_names))[0]
    except ValueError:  # did not converge: show nothing rather than PHI
        return FAILED_REDACTION


def shown(value: Any, policy: Policy | str | None, record_names: Iterable[str] = (), *,
          keep: Iterable[str] = (), labels: Iterable[Any] = ()) -> Any:
    """``value`` (JSON-like) as it may be shown under ``policy``: every string redacted when the
    policy redacts, except those under a key in ``keep`` or ending in ``_id`` (identifiers that
    Warden issued, never content)."""
    if not redacts(policy, tuple(labels)):
        return value
    names = tuple(record_names)
    kept = frozenset(keep)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact_text(v, names)
        if isinstance(v, Mapping):
            return {k: (x if k in kept or str(k).endswith("_id") else walk(x)) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


def sensitive(labels: Iterable[Any]) -> list[str]:
    """The labels among ``labels`` that follow the data, sorted and unique."""
    return sorted({str(label) for label in labels} & set(SENSITIVE_LABELS))


__all__ = ["SENSITIVE_LABELS", "redact_text", "redacts", "sensitive", "shown"]
