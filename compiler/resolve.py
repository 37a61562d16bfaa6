"""Stages 1 and 2: classify the intent and resolve its primitives (metric, direction, severity).

The lexicon resolver in ``compiler/lexicon.py`` does the reading. An optional ``classifier``
(for example the LLM hook in ``compiler/llm.py``) is consulted only for a primitive the lexicon
did not find, and only names it returns that exist in the guardrails vocabulary are accepted:
it can name a metric or a direction, never a parameter value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.guardrails import Guardrails
from compiler.lexicon import Located, Scan
from compiler.model import DIRECTION_FAMILY, DIRECTIONS

#: ``classifier(normalized_intent, guardrails_version) -> {"metric"?: str, "direction"?: str} | None``
Classifier = Callable[[str, str], Mapping[str, Any] | None]


@dataclass(slots=True)
class Primitives:
    """What the intent is about, with the words each fact came from."""

    metric: str | None = None
    metric_source: dict[str, Any] = field(default_factory=dict)
    movement: str | None = None
    movement_words: list[str] = field(default_factory=list)
    comparators: list[Located] = field(default_factory=list)
    anomaly_words: list[str] = field(default_factory=list)
    absence_words: list[str] = field(default_factory=list)
    severity_word: str | None = None
    severity_level: str | None = None
    families: list[str] = field(default_factory=list)
    classifier_note: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "metric_source": self.metric_source,
            "movement": self.movement,
            "movement_words": self.movement_words,
            "comparators": [c.text for c in self.comparators],
            "anomaly_words": self.anomaly_words,
            "absence_words": self.absence_words,
            "severity_word": self.severity_word,
            "severity_level": self.severity_level,
            "families": self.families,
        }


def classify(scan: Scan) -> dict[str, Any]:
    """Which kinds of condition the words point at, in order of first mention."""
    families: list[str] = []
    for found in sorted([*scan.phrases, *scan.zscores], key=lambda x: x.start):
        family = "anomaly" if found.phrase is None else DIRECTION_FAMILY.get(found.phrase.direction or "")
        if family and family not in families:
            families.append(family)
    return {
        "normalized": scan.normalized,
        "families": families,
        "kind": "monitoring" if families else "unrecognised",
        "entity_mentioned": scan.entity_masked,
    }


def _movement(words: list[tuple[str, str]]) -> str | None:
    kinds = {direction for direction, _ in words}
    if not kinds:
        return None
    if "any" in kinds or {"increase", "decrease"} <= kinds:
        return "any"
    return kinds.pop()


def _ask_classifier(prims: Primitives, scan: Scan, g: Guardrails, classifier: Classifier) -> None:
    try:
        answer = classifier(scan.normalized, g.version)
    except Exception as exc:  # a failing optional helper must not fail compilation
        prims.classifier_note = f"classifier failed: {type(exc).__name__}"
        return
    if not isinstance(answer, Mapping):
        prims.classifier_note = "classifier gave no answer"
        return
    notes = []
    metric = answer.get("metric")
    if prims.metric is None and isinstance(metric, str) and metric in g.metrics:
        prims.metric = metric
        prims.metric_source = {"source": "classifier"}
        notes.append(f"metric={metric}")
    direction = answer.get("direction")
    if (
        not prims.families
        and isinstance(direction, str)
        and direction in DIRECTIONS
        and DIRECTION_FAMILY[direction] != "threshold"
    ):
        family = DIRECTION_FAMILY[direction]
        prims.families.append(family)
        if family == "change":
            prims.movement = direction
            prims.movement_words = [f"classifier:{direction}"]
        elif family == "anomaly":
            prims.anomaly_words = ["classifier:anomaly"]
        else:
            prims.absence_words = ["classifier:absence"]
        notes.append(f"direction={direction}")
    prims.classifier_note = "classifier supplied " + ", ".join(notes) if notes else "classifier added nothing"


def resolve_primitives(
    scan: Scan, families: list[str], g: Guardrails, namespace: str | None, classifier: Classifier | None
) -> Primitives:
    """Metric, direction words and severity word, each traced to the text or rule it came from."""
    prims = Primitives(families=list(families))
    moves: list[tuple[str, str]] = []
    for found in scan.phrases:
        phrase = found.phrase
        assert phrase is not None
        if phrase.metric and prims.metric is None:
            prims.metric = phrase.metric
            prims.metric_source = {"source": "intent word", "word": found.text}
        if phrase.severity and prims.severity_word is None:
            prims.severity_word = found.text
            prims.severity_level = phrase.severity
        direction = phrase.direction
        if direction in ("increase", "decrease", "any"):
            moves.append((direction, found.text))
        elif direction in ("above", "below"):
            prims.comparators.append(found)
        elif direction == "anomaly":
            prims.anomaly_words.append(found.text)
        elif direction == "absence":
            prims.absence_words.append(found.text)
    if scan.zscores and not prims.anomaly_words:
        prims.anomaly_words.append(scan.zscores[0].text)
    prims.movement = _movement(moves)
    prims.movement_words = [word for _, word in moves]
    if classifier is not None and (prims.metric is None or not prims.families):
        _ask_classifier(prims, scan, g, classifier)
    if prims.metric is None and namespace:
        rule = g.namespaces.get(namespace) or {}
        if rule.get("default_metric"):
            prims.metric = rule["default_metric"]
            prims.metric_source = {"source": "namespace default", "rule": f"bias_rules.namespaces.{namespace}"}
    if prims.metric is None:
        for family in prims.families:
            if family in g.default_metric:
                prims.metric = g.default_metric[family]
                prims.metric_source = {"source": "strategy default", "rule": f"default_metric.{family}"}
                break
    return prims
