"""explain and calibrate."""

from __future__ import annotations

import json

import pytest

from compiler import (
    CalibrationError,
    CompileError,
    calibrate,
    calibrated_condition,
    compile_intent,
    default_guardrails,
    explain,
)

NOTIFY = {"type": "notification"}


def condition(intent: str, constraints: dict | None = None) -> dict:
    return compile_intent(intent, "AAPL", NOTIFY, constraints).condition


def test_explain_worked_example_chain():
    compiled = compile_intent("Alert me when AAPL price rises significantly", "AAPL", NOTIFY)
    result = explain(compiled)
    json.dumps(result, allow_nan=False)
    value = next(p for p in result["parameters"] if p["name"] == "value")
    assert value["source"] == "prior"
    steps = [(s["step"], s["value"]) for s in value["chain"]]
    assert steps == [
        ("severity word", "significantly"),
        ("severity", "high"),
        ("prior", "change.high"),
        ("prior value", 0.10),
        ("value", 0.10),
    ]
    assert "'significantly' → high" in value["sentence"] and "change.high" in value["sentence"]
    assert [s["stage"] for s in result["stages"]][0] == "classify"
    assert all(isinstance(s, str) and s for s in result["sentences"])
    assert result["guardrails_version"] == result["explained_with"] == "2026.11.1"


def test_explain_explicit_number_and_condition_only():
    cond = condition("AAPL price drops more than 5% within 4 hours")
    result = explain(cond)  # a stored condition alone, no trace
    by_name = {p["name"]: p for p in result["parameters"]}
    assert by_name["value"]["source"] == "explicit"
    assert "explicit number in intent" in by_name["value"]["sentence"]
    assert by_name["window"]["source"] == "explicit"
    assert by_name["direction"]["sentence"] == "direction = decrease: from the word 'drops'."
    assert result["stages"][0]["stage"] == "fill_parameters"


def test_explain_shows_bias_and_version_mismatch():
    cond = condition("BTC price rises", {"namespace": "crypto", "sensitivity": "high"})
    doc = default_guardrails()
    doc["version"] = "other"
    result = explain(cond, doc)
    value = next(p for p in result["parameters"] if p["name"] == "value")
    rules = [s.get("rule") for s in value["chain"] if s["step"] == "bias"]
    assert rules == ["bias_rules.sensitivity.high", "bias_rules.namespaces.crypto.scale.change.value"]
    assert any("explained with other" in s for s in result["sentences"])


def test_too_noisy_makes_change_harder_to_fire_and_too_quiet_easier():
    cond = condition("Alert me when AAPL price rises significantly")  # change.high = 0.10
    assert calibrate(cond, feedback="too_quiet") == {"direction": "increase", "value": 0.05, "window": "1d"}
    noisy = calibrate(cond, feedback="too_noisy")
    assert noisy["value"] > 0.10 and noisy["value"] == 0.15  # past the last prior: ×1.5
    medium = condition("AAPL price rises")
    assert calibrate(medium, feedback="too_noisy")["value"] == 0.10
    assert calibrate(medium, feedback="too_quiet")["value"] == 0.02


def test_feedback_for_other_strategies():
    anomaly = condition("AAPL volume is unusual")  # zscore 2.5
    assert calibrate(anomaly, feedback="too_noisy")["zscore"] == 3.0
    assert calibrate(anomaly, feedback="too_quiet")["zscore"] == 2.0
    absence = condition("heartbeat stops")  # 1h
    assert calibrate(absence, feedback="too_noisy") == {"window": "4h"}
    assert calibrate(absence, feedback="too_quiet") == {"window": "15m"}
    above = condition("price goes above 200")
    assert calibrate(above, feedback="too_noisy")["value"] == 210
    assert calibrate(above, feedback="too_quiet")["value"] == 190
    below = condition("price falls below 100")
    assert calibrate(below, feedback="too_noisy")["value"] == 95


def test_feedback_respects_namespace_scale():
    cond = condition("BTC price rises", {"namespace": "crypto"})  # 0.05 × 2
    assert cond["strategy"]["params"]["value"] == 0.10
    assert calibrate(cond, feedback="too_noisy")["value"] == 0.20


def test_feedback_is_bounded_by_ranges():
    cond = condition("AAPL volume is 6 sigma unusual")
    with pytest.raises(CalibrationError) as err:
        calibrate(cond, feedback="too_noisy")
    assert err.value.code == "out_of_range"
    cond = condition("heartbeat silent for 1 minute")
    with pytest.raises(CalibrationError):
        calibrate(cond, feedback="too_quiet")
    top = condition("price rises 90%")
    assert calibrate(top, feedback="too_noisy")["value"] == 1.0  # clamped to the inclusive max
    with pytest.raises(CalibrationError):
        calibrate(
            calibrated_condition(top, {"direction": "increase", "value": 1.0, "window": "1d"}), feedback="too_noisy"
        )


def test_explicit_params():
    cond = condition("Alert me when AAPL price rises significantly")
    assert calibrate(cond, params={"value": 0.2}) == {"direction": "increase", "value": 0.2, "window": "1d"}
    assert calibrate(cond, params={"window": "24h"})["window"] == "1d"
    for bad in ({"value": 0}, {"value": 1.5}, {"window": "3h"}, {"direction": "sideways"}):
        with pytest.raises(CalibrationError) as err:
            calibrate(cond, params=bad)
        assert err.value.code == "out_of_range"
    with pytest.raises(CalibrationError) as err:
        calibrate(cond, params={"zscore": 3})
    assert err.value.code == "invalid_calibration" and "zscore" in err.value.message
    with pytest.raises(CalibrationError):
        calibrate(cond)
    with pytest.raises(CalibrationError):
        calibrate(cond, params={"value": 0.2}, feedback="too_noisy")
    with pytest.raises(CalibrationError):
        calibrate(cond, feedback="meh")
    assert isinstance(err.value, ValueError) and isinstance(err.value, CompileError)


def test_calibrated_condition_is_a_new_body_with_provenance_and_plan():
    cond = condition("Alert me when AAPL price rises significantly")
    new_params = calibrate(cond, feedback="too_quiet")
    new = calibrated_condition(cond, new_params, feedback="too_quiet")
    assert cond["strategy"]["params"]["value"] == 0.10  # the old version is untouched
    assert new["strategy"]["params"]["value"] == 0.05 and new["plan"]["params"]["value"] == 0.05
    assert new["severity"] == "medium"
    assert new["provenance"]["value"]["source"] == "calibration"
    assert new["provenance"]["value"]["previous"] == 0.10
    assert "5%" in new["description"]
    assert "feedback too_quiet" in explain(new)["parameters"][1]["sentence"]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        {"strategy": {"type": "vibes", "params": {}}},
        {"strategy": {"type": "change", "params": {"value": "x"}}},
    ],
)
def test_calibrate_rejects_malformed_conditions(bad):
    with pytest.raises(CalibrationError):
        calibrate(bad, feedback="too_noisy")
