"""compile_intent: the worked example, explicit numbers, each strategy, each error code, bias rules."""

from __future__ import annotations

import json

import pytest

from compiler import (
    ACTION_BINDING_FAILED,
    NO_PRIMITIVE,
    NO_VALID_STRATEGY,
    Compiled,
    CompileError,
    compile_intent,
    default_guardrails,
)
from compiler.model import STAGES

NOTIFY = {"type": "notification"}


def strategy(intent: str, constraints: dict | None = None, **kwargs) -> dict:
    return compile_intent(intent, "AAPL", NOTIFY, constraints, **kwargs).condition["strategy"]


def test_worked_example_exactly():
    compiled = compile_intent("Alert me when AAPL price rises significantly", "AAPL", {"type": "notification"})
    assert isinstance(compiled, Compiled)
    assert compiled.condition["strategy"] == {
        "type": "change",
        "params": {"direction": "increase", "value": 0.10, "window": "1d"},
    }
    assert compiled.condition["metric"] == "price"
    assert compiled.condition["severity"] == "high"
    assert compiled.concept["metric"] == "price"
    assert compiled.concept["entity_scope"] == "AAPL"
    assert compiled.action == {"type": "notification"}
    assert compiled.validation["valid"] is True
    assert compiled.guardrails_version == compiled.condition["guardrails_version"] == "2026.11.1"
    value = compiled.condition["provenance"]["value"]
    assert (value["severity_from"]["word"], value["severity"], value["prior"]) == (
        "significantly",
        "high",
        "change.high",
    )
    plan = compiled.condition["plan"]
    assert plan["strategy"] == "change" and plan["window_seconds"] == 86400 and plan["metric"] == "price"


def test_trace_has_every_stage_in_order_with_required_keys():
    compiled = compile_intent("Alert me when AAPL price rises significantly", "AAPL", NOTIFY)
    assert [t["stage"] for t in compiled.trace] == list(STAGES)
    for entry in compiled.trace:
        assert set(entry) == {"stage", "input", "decision", "rule", "explanation"}
        assert entry["explanation"].endswith(".") and len(entry["explanation"]) > 10


def test_to_dict_is_json_and_a_copy():
    compiled = compile_intent("Alert me when AAPL price rises significantly", "AAPL", NOTIFY)
    data = compiled.to_dict()
    assert set(data) == {"concept", "condition", "action", "validation", "trace", "guardrails_version"}
    json.dumps(data, allow_nan=False)
    data["condition"]["strategy"]["params"]["value"] = 99
    assert compiled.condition["strategy"]["params"]["value"] == 0.10


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        (
            "Alert me when AAPL drops more than 5%",
            {"type": "change", "params": {"direction": "decrease", "value": 0.05, "window": "1d"}},
        ),
        ("AAPL price falls below 150", {"type": "threshold", "params": {"direction": "below", "value": 150}}),
        ("tell me when the price is above 200", {"type": "threshold", "params": {"direction": "above", "value": 200}}),
        ("price goes over $1,250.50", {"type": "threshold", "params": {"direction": "above", "value": 1250.5}}),
        (
            "price drops 5% within 4 hours",
            {"type": "change", "params": {"direction": "decrease", "value": 0.05, "window": "4h"}},
        ),
        (
            "price rises significantly in 1h",
            {"type": "change", "params": {"direction": "increase", "value": 0.10, "window": "1h"}},
        ),
        (
            "stock falls by 7.5 percent in a day",
            {"type": "change", "params": {"direction": "decrease", "value": 0.075, "window": "1d"}},
        ),
        (
            "price swings 3% within 15m",
            {"type": "change", "params": {"direction": "any", "value": 0.03, "window": "15m"}},
        ),
        ("error rate rises above 5%", {"type": "threshold", "params": {"direction": "above", "value": 0.05}}),
        ("price rises over 5%", {"type": "change", "params": {"direction": "increase", "value": 0.05, "window": "1d"}}),
        ("latency is 3.5 sigma unusual", {"type": "anomaly", "params": {"zscore": 3.5, "window": "1d"}}),
        ("heartbeat goes silent for 10 minutes", {"type": "absence", "params": {"window": "10m"}}),
    ],
)
def test_explicit_numbers_and_windows_beat_priors(intent, expected):
    assert strategy(intent) == expected


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        (
            "AAPL price rises slightly",
            {"type": "change", "params": {"direction": "increase", "value": 0.02, "window": "1d"}},
        ),
        (
            "AAPL price moves noticeably",
            {"type": "change", "params": {"direction": "any", "value": 0.05, "window": "1d"}},
        ),
        ("AAPL volume is unusual", {"type": "anomaly", "params": {"zscore": 2.5, "window": "1d"}}),
        ("AAPL volume is highly unusual", {"type": "anomaly", "params": {"zscore": 3.0, "window": "1d"}}),
        ("the heartbeat stops", {"type": "absence", "params": {"window": "1h"}}),
        ("signups go quiet a bit", {"type": "absence", "params": {"window": "15m"}}),
    ],
)
def test_each_strategy_from_priors(intent, expected):
    assert strategy(intent) == expected


def test_metric_synonyms_and_defaults():
    assert compile_intent("the shares plunge", "AAPL", NOTIFY).condition["metric"] == "price"
    assert compile_intent("sign-ups drop 10%", "app", NOTIFY).condition["metric"] == "signups"
    # No metric word: the guardrails default for the strategy family, recorded as such.
    compiled = compile_intent("Alert me if it stops reporting", "svc-1", NOTIFY)
    assert compiled.condition["metric"] == "heartbeat"
    assert compiled.trace[1]["decision"]["metric_source"]["source"] == "strategy default"


def test_entity_scope_words_in_intent_are_not_read_as_vocabulary():
    compiled = compile_intent("alert when up-stream latency rises", "up-stream", NOTIFY)
    assert compiled.condition["metric"] == "latency"
    assert compiled.concept["name"] == "up-stream latency increase"


@pytest.mark.parametrize("intent", ["", "   ", "hello world", "make me a sandwich", "AAPL price"])
def test_no_primitive(intent):
    with pytest.raises(CompileError) as err:
        compile_intent(intent, "AAPL", NOTIFY)
    assert err.value.code == NO_PRIMITIVE
    assert "understand" in err.value.message
    assert err.value.trace and err.value.trace[-1]["stage"] == "resolve_primitives"


@pytest.mark.parametrize(
    ("intent", "reason"),
    [
        ("price goes above", "explicit number"),
        ("price rises 150%", "(0, 1]"),
        ("price rises within 3 hours", "allowed windows"),
        ("latency is 9 sigma unusual", "[1, 6]"),
    ],
)
def test_no_valid_strategy(intent, reason):
    with pytest.raises(CompileError) as err:
        compile_intent(intent, "AAPL", NOTIFY)
    assert err.value.code == NO_VALID_STRATEGY
    assert reason in err.value.message
    assert err.value.trace[-1]["stage"] == "select_strategy"


def test_rises_above_without_number_falls_back_to_change_and_traces_the_rejection():
    compiled = compile_intent("price rises above the usual", "AAPL", NOTIFY)
    assert compiled.condition["strategy"]["type"] == "change"
    rejected = compiled.trace[2]["decision"]["rejected"]
    assert rejected[0]["strategy"] == "threshold"


@pytest.mark.parametrize(
    "delivery",
    [
        {"type": "webhook", "endpoint": "ftp://example.com/x"},
        {"type": "webhook", "endpoint": "http://127.0.0.1/hook"},
        {"type": "webhook", "endpoint": "http://10.0.0.5/hook"},
        {"type": "webhook", "endpoint": "http://localhost:8000/hook"},
        {"type": "webhook"},
        {"type": "agent", "compliance_policy": "gdpr"},
        {"type": "agent", "budget_cents": 5},
        {"type": "carrier-pigeon"},
        "notification",
    ],
)
def test_action_binding_failed(delivery):
    with pytest.raises(CompileError) as err:
        compile_intent("Alert me when AAPL price rises significantly", "AAPL", delivery)
    assert err.value.code == ACTION_BINDING_FAILED
    assert err.value.trace[-1]["stage"] == "generate_concept_condition"


def test_injected_endpoint_check_decides():
    seen = []

    def refuse(url: str) -> str | None:
        seen.append(url)
        return "blocked by test"

    delivery = {"type": "webhook", "endpoint": "https://myapp.com/hooks/alert"}
    with pytest.raises(CompileError) as err:
        compile_intent("AAPL price rises", "AAPL", delivery, endpoint_check=refuse)
    assert err.value.code == ACTION_BINDING_FAILED and "blocked by test" in err.value.message
    assert seen == ["https://myapp.com/hooks/alert"]
    allowed = compile_intent(
        "AAPL price rises",
        "AAPL",
        {"type": "webhook", "endpoint": "http://127.0.0.1:9/h"},
        endpoint_check=lambda url: None,
    )
    assert allowed.action == {"type": "webhook", "endpoint": "http://127.0.0.1:9/h"}


def test_agent_binding_defaults_and_alias():
    compiled = compile_intent("AAPL price rises", "AAPL", {"type": "agent", "compliance_policy": "legal"})
    assert compiled.action["compliance_policy"] == "legal_privilege"
    assert compiled.action["budget_cents"] == 10000
    assert "rises by at least 5%" in compiled.action["task"]
    custom = compile_intent(
        "AAPL price rises", "AAPL", {"type": "agent", "task": "Summarise news", "budget_cents": 500}
    )
    assert custom.action == {
        "type": "agent",
        "task": "Summarise news",
        "compliance_policy": "default",
        "budget_cents": 500,
    }


def test_sensitivity_bias_shifts_severity_one_step():
    intent = "Alert me when AAPL price rises significantly"
    assert strategy(intent, {"sensitivity": "high"})["params"]["value"] == 0.05
    assert strategy(intent, {"sensitivity": "medium"})["params"]["value"] == 0.10
    assert strategy(intent, {"sensitivity": "low"})["params"]["value"] == 0.10  # clamped at high
    assert strategy("AAPL price rises", {"sensitivity": "high"})["params"]["value"] == 0.02
    assert strategy("AAPL price rises", {"sensitivity": "low"})["params"]["value"] == 0.10


def test_sensitivity_set_rule_overrides():
    doc = default_guardrails()
    doc["version"] = "test.set"
    doc["bias_rules"]["sensitivity"]["high"] = {"set": "low"}
    assert (
        strategy("AAPL price rises significantly", {"sensitivity": "high"}, guardrails=doc)["params"]["value"] == 0.02
    )


def test_namespace_bias_scales_prior_values_only():
    assert strategy("BTC price rises significantly", {"namespace": "crypto"})["params"]["value"] == 0.20
    assert strategy("BTC price rises noticeably", {"namespace": "crypto"})["params"]["value"] == 0.10
    assert strategy("EURUSD rises", {"namespace": "fx"})["params"]["value"] == 0.025
    assert strategy("BTC price rises 5%", {"namespace": "crypto"})["params"]["value"] == 0.05  # explicit wins
    both = compile_intent("BTC price rises", "BTC", NOTIFY, {"namespace": "crypto", "sensitivity": "high"})
    assert both.condition["strategy"]["params"]["value"] == 0.04
    assert [b["rule"] for b in both.condition["provenance"]["value"]["bias"]] == [
        "bias_rules.sensitivity.high",
        "bias_rules.namespaces.crypto.scale.change.value",
    ]


def test_bad_constraints_are_value_errors():
    with pytest.raises(ValueError):
        compile_intent("AAPL price rises", "AAPL", NOTIFY, {"sensitivity": "extreme"})


def test_guardrails_override_changes_output_and_version():
    doc = default_guardrails()
    doc["version"] = "2026.12.0-acme"
    doc["priors"]["change.high"]["value"] = 0.15
    doc["priors"]["change.high"]["window"] = "4h"
    doc["severity"]["vocabulary"]["bonkers"] = "high"
    compiled = compile_intent("Alert me when AAPL price rises significantly", "AAPL", NOTIFY, guardrails=doc)
    assert compiled.condition["strategy"]["params"] == {"direction": "increase", "value": 0.15, "window": "4h"}
    assert compiled.guardrails_version == compiled.condition["guardrails_version"] == "2026.12.0-acme"
    assert strategy("AAPL price rises bonkers", guardrails=doc)["params"]["value"] == 0.15
    default = compile_intent("Alert me when AAPL price rises significantly", "AAPL", NOTIFY)
    assert default.condition["strategy"]["params"]["value"] == 0.10


def test_priority_order_comes_from_guardrails():
    intent = "price spikes unusually"
    assert strategy(intent)["type"] == "anomaly"
    doc = default_guardrails()
    doc["version"] = "change-first"
    doc["strategy_priority"] = ["change", "anomaly", "threshold", "absence"]
    assert strategy(intent, guardrails=doc)["type"] == "change"


def test_classifier_fills_only_missing_primitives():
    calls = []

    def classifier(normalized: str, version: str) -> dict:
        calls.append((normalized, version))
        return {"metric": "revenue", "direction": "decrease", "value": 0.9}

    compiled = compile_intent("tell me when the money thing gets worse", "acme", NOTIFY, classifier=classifier)
    assert compiled.condition["metric"] == "revenue"
    assert compiled.condition["strategy"] == {
        "type": "change",
        "params": {"direction": "decrease", "value": 0.05, "window": "1d"},
    }
    assert calls == [("tell me when the money thing gets worse", "2026.11.1")]
    # Known intents never consult it; a failing or nonsensical classifier is ignored.
    compile_intent("AAPL price rises", "AAPL", NOTIFY, classifier=classifier)
    assert len(calls) == 1

    def broken(normalized: str, version: str) -> dict:
        raise RuntimeError("offline")

    with pytest.raises(CompileError) as err:
        compile_intent("the money thing", "acme", NOTIFY, classifier=broken)
    assert err.value.code == NO_PRIMITIVE
    with pytest.raises(CompileError):
        compile_intent(
            "the money thing", "acme", NOTIFY, classifier=lambda n, v: {"metric": "bitcoin-ish", "direction": "x"}
        )
