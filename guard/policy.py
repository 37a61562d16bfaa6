"""Compliance policies as versioned data, and permission resolution against their ceilings.

Each preset is one JSON file in `guard/policies/` (`<name>.json`) with `name`, `title`, `version`,
`max_permissions` (the ceiling), `default_permissions` (used when a request names none), `rules`
(the ordered rule list `Guard.verify` runs, each `{"id": ..., <params>}`) and `halting` (the
violation rules that end a run `blocked` instead of being returned to the model as a tool error).
Files are read once per process and cached; everything after loading is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from guard.catalog import PERMISSION_ORDER, PERMISSIONS
from guard.rules import Check, compile_rule

# Canonical preset names, and every name a request may use for them.
POLICY_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "default": "default",
        "hipaa": "hipaa",
        "sox": "sox",
        "legal_privilege": "legal_privilege",
        "legal": "legal_privilege",
    }
)
POLICY_NAMES: tuple[str, ...] = tuple(POLICY_ALIASES)
PRESET_NAMES: tuple[str, ...] = ("default", "hipaa", "sox", "legal_privilege")


class UnknownPolicy(ValueError):
    """Raised for a compliance policy name that is neither a preset nor an alias."""

    def __init__(self, name: object) -> None:
        super().__init__(f"Unknown compliance policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
        self.name = name


@dataclass(frozen=True, eq=False)  # identity semantics: presets are cached singletons
class Policy:
    """A loaded policy preset.

    `document` is the JSON exactly as shipped, a plain dict ready for `json.dumps` (audit packages
    embed it). Treat it as read-only; verification uses the frozen `rules`, never `document`.
    """

    name: str
    title: str
    version: str
    max_permissions: frozenset[str]
    default_permissions: tuple[str, ...]
    rules: tuple[Mapping[str, Any], ...]
    halting: frozenset[str]
    document: dict[str, Any] = field(repr=False, compare=False)
    # The rules compiled once at load: (rule id, check function), in policy order.
    checks: tuple[tuple[str, Check], ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Resolution:
    """The outcome of intersecting requested permissions with a policy ceiling."""

    effective: list[str]
    denied: list[dict[str, str]]


def canonical_name(name: str) -> str:
    """Map a policy name or alias to its preset name (`legal` -> `legal_privilege`)."""
    try:
        return POLICY_ALIASES[name]
    except (KeyError, TypeError):
        raise UnknownPolicy(name) from None


def sort_permissions(permissions: Iterable[str]) -> list[str]:
    """Deduplicate and order permissions canonically (unknown strings last, alphabetically)."""
    unique = set(permissions)
    return sorted(unique, key=lambda p: (PERMISSION_ORDER.get(p, len(PERMISSIONS)), str(p)))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def policy_from_document(document: Mapping[str, Any]) -> Policy:
    """Build and validate a Policy from its JSON document."""
    try:
        name = document["name"]
        ceiling = frozenset(document["max_permissions"])
        defaults = tuple(sort_permissions(document["default_permissions"]))
        rules = tuple(_freeze(rule) for rule in document["rules"])
        halting = frozenset(document["halting"])
        title = document["title"]
        version = document["version"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed policy document: {exc!r}") from exc
    unknown = (ceiling | set(defaults)) - set(PERMISSIONS)
    if unknown:
        raise ValueError(f"policy {name!r} names unknown permissions {sorted(unknown)}")
    if not set(defaults) <= ceiling:
        raise ValueError(f"policy {name!r} default permissions exceed its ceiling")
    if not all(isinstance(rule, Mapping) and isinstance(rule.get("id"), str) for rule in rules):
        raise ValueError(f"policy {name!r} has a rule without an id")
    checks = tuple(compile_rule(rule) for rule in rules)  # raises ValueError on an unknown rule id
    return Policy(
        name=name,
        title=title,
        version=str(version),
        max_permissions=ceiling,
        default_permissions=defaults,
        rules=rules,
        halting=halting,
        document=json.loads(json.dumps(document)),
        checks=checks,
    )


@cache
def _load_preset(preset: str) -> Policy:
    text = resources.files("guard").joinpath("policies", f"{preset}.json").read_text(encoding="utf-8")
    policy = policy_from_document(json.loads(text))
    if policy.name != preset:
        raise ValueError(f"policies/{preset}.json declares name {policy.name!r}")
    return policy


def load_policy(name: str) -> Policy:
    """Return the preset for `name` (`default|hipaa|sox|legal|legal_privilege`), cached.

    Raises UnknownPolicy for any other name.
    """
    return _load_preset(canonical_name(name))


def resolve_permissions(policy: Policy, requested: Iterable[str] | None) -> Resolution:
    """Intersect requested permissions with the policy ceiling.

    `requested=None` means "use the policy's defaults" and denies nothing. Otherwise every
    requested permission is either effective (inside the ceiling), denied as
    `exceeds_policy_ceiling` (a known permission above it) or denied as `unknown_permission`.
    Both lists are deduplicated and in canonical order.
    """
    if requested is None:
        return Resolution(effective=list(policy.default_permissions), denied=[])
    if isinstance(requested, str):
        raise TypeError("requested permissions must be a list of strings, not a string")
    effective: list[str] = []
    denied: list[dict[str, str]] = []
    for permission in sort_permissions(requested):
        if permission not in PERMISSION_ORDER:
            denied.append(
                {
                    "permission": permission,
                    "reason": "unknown_permission",
                    "detail": f"Unknown permission; expected one of {', '.join(PERMISSIONS)}",
                }
            )
        elif permission not in policy.max_permissions:
            denied.append(
                {
                    "permission": permission,
                    "reason": "exceeds_policy_ceiling",
                    "detail": f"Permission is not within the {policy.title} policy allowed set",
                }
            )
        else:
            effective.append(permission)
    return Resolution(effective=effective, denied=denied)
