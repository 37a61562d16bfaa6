"""The values `Guard.verify` reads and returns: ToolCall, VerifyContext and Decision.

All three are frozen dataclasses. The caller (the executor) builds the call from the model's
tool request and the context from stored state (the execution, its documents, names read so
far); the guard itself never loads anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from guard.normalize import VIEW_SEPARATOR, decoded_views, fold

if TYPE_CHECKING:
    from guard.policy import Policy

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ToolCall:
    """A tool request from the model: the tool name and its (already JSON-decoded) arguments."""

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    # Each argument as the detectors read it, worked out once for all the rules that read it.
    _scan: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def scan_text(self, name: str) -> str | None:
        """Argument ``name`` folded (`guard.normalize.fold`: no zero-width or look-alike
        characters to hide behind) and followed by its decoded views
        (`guard.normalize.decoded_views`: percent-encoded, HTML-escaped or base64 text); None
        unless it is a non-empty string."""
        text = self._scan.get(name)
        if text is None:
            value = self.arguments.get(name)
            if not isinstance(value, str) or not value:
                return None
            value = fold(value)
            views = decoded_views(value)
            text = self._scan[name] = value + VIEW_SEPARATOR + views if views else value
        return text


@dataclass(frozen=True)
class VerifyContext:
    """Everything a verify decision may depend on, captured before the call.

    - `effective_permissions`: the execution's granted permissions (after the policy ceiling).
    - `budget_cents` / `spent_cents`: a tool call when `spent_cents > budget_cents` is refused.
    - `documents`: the workspace documents the rules may look at, keyed by document id and/or
      name, each a mapping with `labels` (list of str) and `content` (str). The same document may
      appear under both keys.
    - `record_names`: names known from the record (for example the patient names found in the
      documents read so far); the HIPAA rule treats them as identifiers.
    """

    execution_id: str
    policy: Policy
    effective_permissions: frozenset[str]
    budget_cents: int
    spent_cents: int = 0
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    record_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept any iterables from callers but keep the frozen value hashable and immutable.
        if not isinstance(self.effective_permissions, frozenset):
            object.__setattr__(self, "effective_permissions", frozenset(self.effective_permissions))
        if not isinstance(self.record_names, tuple):
            object.__setattr__(self, "record_names", tuple(self.record_names))

    def document(self, key: object) -> Mapping[str, Any] | None:
        """The document stored under `key` (id or name), or None."""
        if not isinstance(key, str):
            return None
        return self.documents.get(key)


def labels_of(document: Mapping[str, Any] | None) -> frozenset[str]:
    """The labels of a document mapping (empty for None or a document without labels)."""
    if not document:
        return frozenset()
    labels = document.get("labels") or ()
    return frozenset(str(label) for label in labels)


@dataclass(frozen=True)
class Decision:
    """The outcome of `Guard.verify`.

    `checks` names the checks that passed, in the order they ran (they go into the certificate);
    `violations` lists `{"rule", "permission"?, "reason", "detail"}` dicts; `halt` is true when a
    violation's rule is in the policy's halting set (the run ends `blocked`); otherwise a
    refused call is returned to the model as a tool error.
    """

    tool: str
    permission: str | None
    allowed: bool
    checks: list[str]
    violations: list[dict[str, str]]
    halt: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "permission": self.permission,
            "allowed": self.allowed,
            "checks": list(self.checks),
            "violations": [dict(v) for v in self.violations],
            "halt": self.halt,
        }


def violation(rule: str, reason: str, detail: str, permission: str | None = None) -> dict[str, str]:
    """Build a violation dict in the one shape used everywhere."""
    out = {"rule": rule, "reason": reason, "detail": detail}
    if permission is not None:
        out["permission"] = permission
    return out


def string_fields(call: ToolCall, names: Iterable[str]) -> list[tuple[str, str]]:
    """The (name, text) pairs of `call`'s arguments among `names` that are non-empty strings, each
    as the detectors read it (`ToolCall.scan_text`)."""
    out = []
    for name in names:
        text = call.scan_text(name)
        if text is not None:
            out.append((name, text))
    return out
