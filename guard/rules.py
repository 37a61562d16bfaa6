"""Policy rules: small functions registered by id, parameterised from the policy JSON.

A rule is registered as a *factory*: `factory(params) -> check`, where `check(call, context)`
returns a list of violations (empty when the call passes). Factories run once when a policy is
loaded, so parameters are validated and regexes compiled up front; checks stay cheap.

Rules shipped (ids are also the `rule` of the violations they raise):

- `secret_in_outbound`: API keys, private keys, bearer tokens in outbound arguments.
- `phi_unredacted`: HIPAA Safe Harbor identifiers in outbound text (not to `phi` documents).
- `financial_record_immutable`: overwriting or deleting a `financial` document.
- `missing_justification`: a write without a non-empty `justification` argument.
- `privileged_content_egress`: privileged content or markers leaving the workspace.
- `privileged_content_unlabelled`: privileged content written into a non-privileged document.

To add one: write a factory here, decorate it with `@register_rule("<id>")`, reference the id
(with its parameters) from a policy file, and list it under `halting` if it should end the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from guard.catalog import TOOL_PERMISSIONS
from guard.detectors import find_phi, name_detectors, phi_detectors, secret_detectors
from guard.model import ToolCall, VerifyContext, labels_of, string_fields, violation
from guard.normalize import VIEW_SEPARATOR

Check = Callable[[ToolCall, VerifyContext], list[dict[str, str]]]
RuleFactory = Callable[[Mapping[str, Any]], Check]

RULES: dict[str, RuleFactory] = {}


def register_rule(rule_id: str) -> Callable[[RuleFactory], RuleFactory]:
    """Register a rule factory under `rule_id` (the id policies reference)."""

    def decorate(factory: RuleFactory) -> RuleFactory:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id!r} registered twice")
        RULES[rule_id] = factory
        return factory

    return decorate


def compile_rule(spec: Mapping[str, Any]) -> tuple[str, Check]:
    """Turn one policy rule entry `{"id": ..., <params>}` into `(id, check)`."""
    rule_id = spec["id"]
    try:
        factory = RULES[rule_id]
    except KeyError:
        raise ValueError(f"unknown rule id {rule_id!r}") from None
    return rule_id, factory(spec)


def _tool_fields(params: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """`tools` parameter: {tool: [argument names to inspect]}."""
    tools = params.get("tools") or {}
    if not isinstance(tools, Mapping):
        raise ValueError("rule parameter 'tools' must map tool names to argument lists")
    return {tool: tuple(fields) for tool, fields in tools.items()}


def _target_labels(call: ToolCall, context: VerifyContext) -> frozenset[str]:
    """Labels the written document will carry: the `labels` argument when given, else the
    labels of the existing document of that name (an overwrite keeps its labels)."""
    labels = call.arguments.get("labels")
    if isinstance(labels, list | tuple):
        return frozenset(str(label) for label in labels)
    return labels_of(context.document(call.arguments.get("name")))


def _joined(values: list[tuple[str, str]]) -> str:
    """Fields joined for one fast scan; the separator stops every pattern from spanning two."""
    return values[0][1] if len(values) == 1 else VIEW_SEPARATOR.join(v for _, v in values)


def _types(found: Iterable[Any]) -> str:
    return ", ".join(sorted({f.type for f in found}))


# --- default: secrets --------------------------------------------------------------------------


@register_rule("secret_in_outbound")
def secret_in_outbound(params: Mapping[str, Any]) -> Check:
    fields = _tool_fields(params)
    names_param = params.get("detectors")
    detectors = secret_detectors(tuple(names_param) if names_param else None)

    def check(call: ToolCall, context: VerifyContext) -> list[dict[str, str]]:
        names = fields.get(call.tool)
        if not names:
            return []
        values = string_fields(call, names)
        if not values or not detectors.present(_joined(values)):
            return []
        out = []
        for name, value in values:
            if detectors.present(value):
                out.append(
                    violation(
                        "secret_in_outbound",
                        "secret_detected",
                        f"{call.tool}.{name} contains what looks like a credential "
                        f"({_types(detectors.find(value))}); secrets must not leave the workspace",
                        TOOL_PERMISSIONS.get(call.tool),
                    )
                )
        return out

    return check


# --- hipaa: PHI must be redacted ---------------------------------------------------------------


@register_rule("phi_unredacted")
def phi_unredacted(params: Mapping[str, Any]) -> Check:
    fields = _tool_fields(params)
    exempt = frozenset(params.get("exempt_labels") or ())
    identifiers = tuple(params["identifiers"]) if params.get("identifiers") else None
    detectors = phi_detectors(identifiers)
    use_names = identifiers is None or "name" in identifiers

    def check(call: ToolCall, context: VerifyContext) -> list[dict[str, str]]:
        names = fields.get(call.tool)
        if not names:
            return []
        if call.tool == "write_document" and exempt & _target_labels(call, context):
            return []
        record_names = context.record_names if use_names else ()
        known = name_detectors(record_names) if record_names else None
        values = string_fields(call, names)
        if not values:
            return []
        # Fast path: all fields at once, gates first; typed findings only when present.
        text = _joined(values)
        if not (detectors.present(text) or (known is not None and known.present(text))):
            return []
        out = []
        for name, value in values:
            found = find_phi(value, record_names, identifiers)
            if found:
                out.append(
                    violation(
                        "phi_unredacted",
                        "phi_detected",
                        f"{call.tool}.{name} contains unredacted PHI ({_types(found)}); "
                        "redact it with redact_text and retry",
                        TOOL_PERMISSIONS.get(call.tool),
                    )
                )
        return out

    return check


# --- sox: financial records are immutable, writes are justified --------------------------------


@register_rule("financial_record_immutable")
def financial_record_immutable(params: Mapping[str, Any]) -> Check:
    labels = frozenset(params.get("labels") or ("financial",))
    tools = frozenset(params.get("tools") or ("write_document",))

    def check(call: ToolCall, context: VerifyContext) -> list[dict[str, str]]:
        if call.tool not in tools:
            return []
        if call.tool == "write_document":
            key, action = call.arguments.get("name"), "overwrite"
        else:
            key, action = call.arguments.get("document_id", call.arguments.get("name")), "delete"
        target = context.document(key)
        hit = labels & labels_of(target)
        if target is None or not hit:
            return []
        return [
            violation(
                "financial_record_immutable",
                f"financial_record_{action}",
                f"{call.tool} would {action} document {key!r} labelled {', '.join(sorted(hit))}; "
                "financial records are immutable (write a new document instead)",
                TOOL_PERMISSIONS.get(call.tool),
            )
        ]

    return check


@register_rule("missing_justification")
def missing_justification(params: Mapping[str, Any]) -> Check:
    tools = frozenset(params.get("tools") or ("write_document",))
    argument = str(params.get("argument") or "justification")
    min_length = int(params.get("min_length") or 1)

    def check(call: ToolCall, context: VerifyContext) -> list[dict[str, str]]:
        if call.tool not in tools:
            return []
        value = call.arguments.get(argument)
        if isinstance(value, str) and len(value.strip()) >= min_length:
            return []
        return [
            violation(
                "missing_justification",
                "justification_required",
                f"{call.tool} requires a non-empty {argument!r} argument explaining why the write is needed",
                TOOL_PERMISSIONS.get(call.tool),
            )
        ]

    return check


# --- legal_privilege: privileged content stays inside --------------------------------------------

_WORD_RE = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _shingles(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@lru_cache(maxsize=512)
def _document_shingles(content: str, n: int) -> tuple[int, frozenset[tuple[str, ...]]]:
    """(shingle size, shingles) of a privileged document; short documents use their length."""
    words = _words(content)
    size = min(n, len(words))
    if size < 4:  # too short to recognise without false positives
        return 0, frozenset()
    return size, frozenset(_shingles(words, size))


def _marker_regex(markers: Iterable[str]) -> re.Pattern[str] | None:
    # Words may be separated by spaces, hyphens, underscores or URL-encoded spaces.
    sep = r"(?:[\s\-_+]|%20)+"
    alts = [sep.join(re.escape(part) for part in re.split(r"[\s\-]+", m.strip())) for m in markers]
    alts = [a for a in alts if a]
    return re.compile("(?i:" + "|".join(alts) + ")") if alts else None


def _privileged_finder(params: Mapping[str, Any]) -> Callable[[str, VerifyContext], str | None]:
    """Returns find(text, context) -> a short reason when `text` carries privileged content."""
    labels = frozenset(params.get("labels") or ("privileged",))
    markers = _marker_regex(params.get("markers") or ())
    n = int(params.get("shingle_words") or 8)

    def find(text: str, context: VerifyContext) -> str | None:
        if markers is not None and markers.search(text):
            return "a privilege marker"
        seen: set[str] = set()
        words: list[str] | None = None
        by_size: dict[int, set[tuple[str, ...]]] = {}
        for document in context.documents.values():
            if not labels & labels_of(document):
                continue
            content = document.get("content")
            if not isinstance(content, str) or content in seen:
                continue
            seen.add(content)
            size, doc_shingles = _document_shingles(content, n)
            if not size:
                continue
            if words is None:
                words = _words(text)
            if size not in by_size:
                by_size[size] = _shingles(words, size)
            if not doc_shingles.isdisjoint(by_size[size]):
                return "text copied from a privileged document"
        return None

    return find


@register_rule("privileged_content_egress")
def privileged_content_egress(params: Mapping[str, Any]) -> Check:
    fields = _tool_fields(params)
    find = _privileged_finder(params)

    def check(call: ToolCall, context: VerifyContext) -> list[dict[str, str]]:
        names = fields.get(call.tool)
        if not names:
            return []
        out = []
        for name, value in string_fields(call, names):
            what = find(value, context)
            if what:
                out.append(
                    violation(
                        "privileged_content_egress",
                        "privileged_content_detected",
                        f"{call.tool}.{name} contains {what}; privileged content must not leave the workspace",
                        TOOL_PERMISSIONS.get(call.tool),
                    )
                )
        return out

    return check


@register_rule("privileged_content_unlabelled")
def privileged_content_unlabelled(params: Mapping[str, Any]) -> Check:
    fields = _tool_fields(params)
    labels = frozenset(params.get("labels") or ("privileged",))
    find = _privileged_finder(params)

    def check(call: ToolCall, context: VerifyContext) -> list[dict[str, str]]:
        names = fields.get(call.tool)
        if not names or labels & _target_labels(call, context):
            return []
        out = []
        for name, value in string_fields(call, names):
            what = find(value, context)
            if what:
                out.append(
                    violation(
                        "privileged_content_unlabelled",
                        "privileged_content_in_unlabelled_document",
                        f"{call.tool}.{name} contains {what} but the target document is not labelled "
                        f"{' or '.join(sorted(labels))}; add the label or leave the content out",
                        TOOL_PERMISSIONS.get(call.tool),
                    )
                )
        return out

    return check
