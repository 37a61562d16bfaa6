"""The guardrails document: shipped default, validation of overrides, caching by content."""

from __future__ import annotations

import copy

import pytest

from compiler import GuardrailsError, compile_intent, default_guardrails, load_guardrails, validate_guardrails


def test_default_document_is_valid_and_versioned():
    doc = default_guardrails()
    assert validate_guardrails(doc) == []
    assert doc["version"] == "2026.11.1"
    assert doc["severity"]["default"] == "medium"
    for word in ("significantly", "sharply", "dramatically"):
        assert doc["severity"]["vocabulary"][word] == "high"
    for word in ("noticeably", "moderately"):
        assert doc["severity"]["vocabulary"][word] == "medium"
    for word in ("slightly", "a bit"):
        assert doc["severity"]["vocabulary"][word] == "low"
    assert doc["priors"]["change.high"] == {"value": 0.10, "window": "1d"}
    assert doc["priors"]["change.medium"]["value"] == 0.05
    assert doc["priors"]["change.low"]["value"] == 0.02
    assert not any(key.startswith("threshold.") for key in doc["priors"])


def test_default_guardrails_returns_a_fresh_copy():
    doc = default_guardrails()
    doc["priors"]["change.high"]["value"] = 0.5
    assert default_guardrails()["priors"]["change.high"]["value"] == 0.10


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("version"), "version"),
        (lambda d: d.__setitem__("version", ""), "version"),
        (lambda d: d["severity"].__setitem__("default", "extreme"), "severity.default"),
        (lambda d: d["severity"]["vocabulary"].__setitem__("wildly", "enormous"), "wildly"),
        (lambda d: d.__setitem__("strategy_priority", ["threshold", "vibes"]), "strategy_priority"),
        (lambda d: d["priors"]["change.high"].__setitem__("value", 1.5), "priors.change.high.value"),
        (lambda d: d["priors"]["change.high"].__setitem__("window", "3h"), "priors.change.high.window"),
        (lambda d: d["priors"].__setitem__("threshold.high", {"value": 100}), "explicit number"),
        (lambda d: d["priors"].pop("absence.low"), "priors.absence.low"),
        (lambda d: d["bias_rules"]["sensitivity"].__setitem__("high", {"shift": "one"}), "sensitivity.high"),
        (lambda d: d["bias_rules"]["namespaces"].__setitem__("x", {"scale": {"change.value": -1}}), "namespaces.x"),
        (lambda d: d["directions"]["above"].append("rises"), "rises"),
        (lambda d: d["metrics"]["volume"].append("price"), "price"),
        (lambda d: d["ranges"].__setitem__("windows", ["1h", "soon"]), "soon"),
        (lambda d: d["agent"].__setitem__("default_policy", "none"), "default_policy"),
    ],
)
def test_validation_reports_each_problem(mutate, fragment):
    doc = default_guardrails()
    mutate(doc)
    errors = validate_guardrails(doc)
    assert errors and any(fragment in e for e in errors), errors
    with pytest.raises(GuardrailsError) as err:
        load_guardrails(doc)
    assert err.value.errors == errors


@pytest.mark.parametrize("doc", [None, [], "x", {"version": 1}, {k: None for k in default_guardrails()}])
def test_validation_never_raises_on_garbage(doc):
    assert validate_guardrails(doc)


def test_invalid_override_is_a_guardrails_error_from_compile():
    doc = default_guardrails()
    doc["ranges"]["change.value"]["max"] = -1
    with pytest.raises(GuardrailsError):
        compile_intent("AAPL price rises", "AAPL", {"type": "notification"}, guardrails=doc)


def test_parse_is_cached_by_content_not_by_version_alone():
    doc = default_guardrails()
    doc["version"] = "cache.test"
    first = load_guardrails(doc)
    assert load_guardrails(copy.deepcopy(doc)) is first
    doc["priors"]["change.medium"]["value"] = 0.07  # same version string, different content
    second = load_guardrails(doc)
    assert second is not first and second.priors["change.medium"]["value"] == 0.07
    assert load_guardrails(None) is load_guardrails(None)


def test_parsed_document_is_isolated_from_later_edits():
    doc = default_guardrails()
    doc["version"] = "isolation.test"
    parsed = load_guardrails(doc)
    doc["priors"]["change.high"]["value"] = 0.9
    assert parsed.priors["change.high"]["value"] == 0.10
