"""evaluate_plan: each strategy fires exactly at its boundary and not one step before."""

from __future__ import annotations

import pytest

from compiler import Evaluation, compile_intent, evaluate_plan

NOTIFY = {"type": "notification"}
DAY = 86400.0
NOW = 1_800_000_000.0


def plan_for(intent: str) -> dict:
    return compile_intent(intent, "AAPL", NOTIFY).condition["plan"]


class TestThreshold:
    above = plan_for("AAPL price goes above 200")
    below = plan_for("AAPL price falls below 150")

    def test_above_fires_at_boundary_not_one_step_before(self):
        assert evaluate_plan(self.above, [(NOW - 60, 150.0), (NOW, 200.0)], NOW).active
        assert not evaluate_plan(self.above, [(NOW - 60, 150.0), (NOW, 199.99)], NOW).active

    def test_below_fires_at_boundary_not_one_step_before(self):
        assert evaluate_plan(self.below, [(NOW, 150.0)], NOW).active
        assert not evaluate_plan(self.below, [(NOW, 150.01)], NOW).active

    def test_only_the_latest_point_counts_and_future_points_are_ignored(self):
        assert not evaluate_plan(self.above, [(NOW - 10, 250.0), (NOW, 100.0)], NOW).active
        assert not evaluate_plan(self.above, [(NOW - 10, 100.0), (NOW + 10, 250.0)], NOW).active

    def test_no_data_in_lookback_is_inactive(self):
        result = evaluate_plan(self.above, [(NOW - DAY, 500.0)], NOW)
        assert result == Evaluation(False, {"reason": "no_data"})
        assert not evaluate_plan(self.above, [], NOW).active


class TestChange:
    rise = plan_for("Alert me when AAPL price rises significantly")  # +10% over 1d
    drop = plan_for("AAPL price drops more than 5%")  # -5% over 1d
    swing = plan_for("AAPL price swings 5% within 1h")

    def test_increase_boundary(self):
        assert evaluate_plan(self.rise, [(NOW - DAY, 100.0), (NOW, 110.0)], NOW).active
        assert not evaluate_plan(self.rise, [(NOW - DAY, 100.0), (NOW, 109.99)], NOW).active

    def test_decrease_boundary(self):
        assert evaluate_plan(self.drop, [(NOW - DAY, 100.0), (NOW, 95.0)], NOW).active
        assert not evaluate_plan(self.drop, [(NOW - DAY, 100.0), (NOW, 95.01)], NOW).active
        assert not evaluate_plan(self.drop, [(NOW - DAY, 100.0), (NOW, 120.0)], NOW).active

    def test_any_fires_either_way(self):
        assert evaluate_plan(self.swing, [(NOW - 3600, 100.0), (NOW, 105.0)], NOW).active
        assert evaluate_plan(self.swing, [(NOW - 3600, 100.0), (NOW, 95.0)], NOW).active
        assert not evaluate_plan(self.swing, [(NOW - 3600, 100.0), (NOW, 104.99)], NOW).active

    def test_reference_is_last_point_at_or_before_window_start(self):
        series = [(NOW - 2 * DAY, 50.0), (NOW - DAY, 100.0), (NOW - 10, 200.0), (NOW, 110.0)]
        result = evaluate_plan(self.rise, series, NOW)
        assert result.active and result.evidence["reference"] == 100.0 and result.evidence["reference_ts"] == NOW - DAY
        # One second later the reference is still the point at NOW - DAY (the last one at/before start).
        assert evaluate_plan(self.rise, series, NOW + 1).evidence["reference"] == 100.0

    def test_without_an_older_point_the_earliest_point_is_the_reference(self):
        result = evaluate_plan(self.rise, [(NOW - 3600, 100.0), (NOW, 111.0)], NOW)
        assert result.active and result.evidence["reference"] == 100.0

    def test_insufficient_or_degenerate_data(self):
        assert not evaluate_plan(self.rise, [(NOW, 110.0)], NOW).active
        assert evaluate_plan(self.rise, [(NOW - DAY, 0.0), (NOW, 5.0)], NOW).evidence["reason"] == "zero_reference"
        assert not evaluate_plan(self.rise, [(NOW - 3 * DAY, 1.0), (NOW - 2 * DAY, 9.0)], NOW).active

    def test_negative_reference_uses_magnitude(self):
        assert evaluate_plan(self.rise, [(NOW - DAY, -100.0), (NOW, -90.0)], NOW).active


class TestAnomaly:
    plan = plan_for("AAPL volume is 3 sigma unusual")  # |z| >= 3 over 1d, population stdev

    def baseline(self) -> list[tuple[float, float]]:
        # mean 10, population stdev 1
        return [(NOW - 600 * (i + 1), v) for i, v in enumerate([9.0, 11.0, 9.0, 11.0, 9.0, 11.0])][::-1]

    def test_boundary(self):
        assert evaluate_plan(self.plan, [*self.baseline(), (NOW, 13.0)], NOW).active
        assert not evaluate_plan(self.plan, [*self.baseline(), (NOW, 12.99)], NOW).active
        assert evaluate_plan(self.plan, [*self.baseline(), (NOW, 7.0)], NOW).active

    def test_needs_min_points_in_window(self):
        assert not evaluate_plan(self.plan, [*self.baseline()[:4], (NOW, 100.0)], NOW).active
        old = [(NOW - 2 * DAY + i, 10.0) for i in range(10)]
        assert evaluate_plan(self.plan, [*old, (NOW, 100.0)], NOW).evidence["reason"] == "not_enough_points"

    def test_flat_baseline(self):
        flat = [(NOW - 60 * (i + 1), 5.0) for i in range(6)][::-1]
        assert not evaluate_plan(self.plan, [*flat, (NOW, 5.0)], NOW).active
        result = evaluate_plan(self.plan, [*flat, (NOW, 5.1)], NOW)
        assert result.active and result.evidence["zscore"] == "inf"


class TestAbsence:
    plan = plan_for("heartbeat goes silent for 10 minutes")

    def test_fires_exactly_when_silence_equals_window(self):
        series = [(NOW - 1200, 1.0), (NOW - 600, 1.0)]
        assert evaluate_plan(self.plan, series, NOW).active
        assert not evaluate_plan(self.plan, series, NOW - 1).active

    def test_no_data_fires_and_future_points_do_not_count(self):
        assert evaluate_plan(self.plan, [], NOW).active
        assert evaluate_plan(self.plan, [(NOW - 600, 1.0), (NOW + 5, 1.0)], NOW).active


def test_unknown_strategy_is_a_value_error():
    with pytest.raises(ValueError):
        evaluate_plan({"strategy": "vibes"}, [], NOW)
