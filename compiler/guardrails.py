"""The guardrails document: loading, validation and the parsed, cached form the stages use.

The shipped default lives in ``compiler/data/guardrails.json``. A workspace may pass its own
document; it is validated (``GuardrailsError`` lists every problem) and parsed once, then cached
by the SHA-256 of its canonical JSON, so a changed document never reuses a stale parse even if
someone forgets to bump its ``version``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import GuardrailsError
from compiler.model import RANGED_PARAMS
from compiler.text import normalize, tokens
from compiler.units import format_window, parse_window
from compiler.validation import validate_guardrails

DEFAULT_PATH = Path(__file__).parent / "data" / "guardrails.json"
_CACHE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Phrase:
    """What one vocabulary phrase means; a phrase may be both a direction and a severity word."""

    text: str
    metric: str | None = None
    direction: str | None = None
    severity: str | None = None


@dataclass(frozen=True, slots=True)
class Range:
    low: float
    low_inclusive: bool
    high: float
    high_inclusive: bool

    def contains(self, value: float) -> bool:
        low_ok = value >= self.low if self.low_inclusive else value > self.low
        high_ok = value <= self.high if self.high_inclusive else value < self.high
        return low_ok and high_ok

    def text(self) -> str:
        return (
            ("[" if self.low_inclusive else "(")
            + f"{self.low:g}, {self.high:g}"
            + ("]" if self.high_inclusive else ")")
        )


@dataclass(frozen=True, eq=False)
class Guardrails:
    """A validated guardrails document, parsed into lookup tables. Treat as read-only."""

    version: str
    digest: str
    document: dict[str, Any] = field(repr=False)
    levels: tuple[str, ...]
    default_severity: str
    severity_words: dict[str, str]
    priority: tuple[str, ...]
    priors: dict[str, dict[str, Any]]
    sensitivity: dict[str, dict[str, Any]]
    namespaces: dict[str, dict[str, Any]]
    default_metric: dict[str, str]
    metrics: tuple[str, ...]
    phrases: dict[tuple[str, ...], Phrase] = field(repr=False)
    max_phrase_len: int
    read_as_amount: frozenset[str]
    ranges: dict[str, Range]
    windows: tuple[str, ...]
    window_seconds: frozenset[int]
    plan: dict[str, Any]
    calibration: dict[str, dict[str, float]]
    agent: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the source document."""
        return copy.deepcopy(self.document)

    def shift(self, level: str, steps: int) -> str:
        """The severity ``steps`` away from ``level``, clamped to the ends of ``levels``."""
        index = min(max(self.levels.index(level) + steps, 0), len(self.levels) - 1)
        return self.levels[index]

    def window_allowed(self, seconds: int) -> bool:
        return seconds in self.window_seconds


def _phrase_table(doc: dict[str, Any]) -> dict[tuple[str, ...], Phrase]:
    table: dict[tuple[str, ...], dict[str, str]] = {}

    def add(phrase: str, kind: str, value: str) -> None:
        key = tokens(normalize(phrase))
        if key:
            table.setdefault(key, {})[kind] = value

    for metric, synonyms in sorted(doc["metrics"].items()):
        add(metric, "metric", metric)
        for phrase in synonyms:
            add(phrase, "metric", metric)
    for direction, words in sorted(doc["directions"].items()):
        for phrase in words:
            add(phrase, "direction", direction)
    for word, level in sorted(doc["severity"]["vocabulary"].items()):
        add(word, "severity", level)
    return {key: Phrase(" ".join(key), **kinds) for key, kinds in table.items()}


def _parse(doc: dict[str, Any], digest: str) -> Guardrails:
    phrases = _phrase_table(doc)
    ranges = {
        key: Range(
            float(doc["ranges"][key]["min"]),
            bool(doc["ranges"][key].get("min_inclusive", True)),
            float(doc["ranges"][key]["max"]),
            bool(doc["ranges"][key].get("max_inclusive", True)),
        )
        for key in RANGED_PARAMS
    }
    seconds = sorted({parse_window(w) for w in doc["ranges"]["windows"]})
    number_words = doc.get("number_words") or {}
    return Guardrails(
        version=doc["version"],
        digest=digest,
        document=doc,
        levels=tuple(doc["severity"]["levels"]),
        default_severity=doc["severity"]["default"],
        severity_words={normalize(w): lvl for w, lvl in doc["severity"]["vocabulary"].items()},
        priority=tuple(doc["strategy_priority"]),
        priors={k: dict(v) for k, v in doc["priors"].items()},
        sensitivity=dict(doc["bias_rules"].get("sensitivity") or {}),
        namespaces={normalize(k): dict(v) for k, v in (doc["bias_rules"].get("namespaces") or {}).items()},
        default_metric=dict(doc.get("default_metric") or {}),
        metrics=tuple(sorted(doc["metrics"])),
        phrases=phrases,
        max_phrase_len=max((len(k) for k in phrases), default=1),
        read_as_amount=frozenset(normalize(p) for p in number_words.get("comparators_read_as_amount", ())),
        ranges=ranges,
        windows=tuple(format_window(s) for s in seconds),
        window_seconds=frozenset(seconds),
        plan=dict(doc["plan"]),
        calibration={k: dict(v) for k, v in (doc.get("calibration") or {}).items()},
        agent=copy.deepcopy(doc["agent"]),
    )


def _digest(doc: dict[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


_cache: OrderedDict[str, Guardrails] = OrderedDict()
_default: Guardrails | None = None


def default_guardrails() -> dict[str, Any]:
    """A fresh copy of the shipped default document (safe to edit and pass back in)."""
    return load_guardrails(None).to_dict()


def load_guardrails(doc: dict[str, Any] | Guardrails | None = None) -> Guardrails:
    """The parsed form of ``doc`` (default document when None); GuardrailsError when invalid."""
    global _default
    if isinstance(doc, Guardrails):
        return doc
    if doc is None:
        if _default is None:
            raw = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
            _default = load_guardrails(raw)
        return _default
    if not isinstance(doc, dict):
        raise GuardrailsError(["guardrails document must be a JSON object"])
    try:
        digest = _digest(doc)
    except (TypeError, ValueError) as exc:
        raise GuardrailsError([f"guardrails document is not JSON-serialisable: {exc}"]) from None
    cached = _cache.get(digest)
    if cached is not None:
        _cache.move_to_end(digest)
        return cached
    errors = validate_guardrails(doc)
    if errors:
        raise GuardrailsError(errors)
    parsed = _parse(copy.deepcopy(doc), digest)
    _cache[digest] = parsed
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return parsed
