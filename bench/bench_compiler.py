"""Compiler micro-benchmark, one core, pure CPU, no services.

``compile_per_s``: full ``compile_intent`` pipeline (default guardrails, parsed once and cached)
over a mix of realistic intents, including a share that fails with a CompileError as real
traffic does. ``evaluate_per_s``: ``evaluate_plan`` over 60-point series, one plan of each
strategy in turn, the way an evaluation worker calls it per incoming signal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from compiler import CompileError, compile_intent, evaluate_plan

INTENTS = [
    ("Alert me when AAPL price rises significantly", "AAPL", None),
    ("Alert me if AAPL drops more than 5%", "AAPL", None),
    ("Notify me when TSLA falls below 150", "TSLA", None),
    ("tell me if the price goes above $1,200 within 4 hours", "GOOG", None),
    ("BTC jumps sharply", "BTC-USD", {"namespace": "crypto", "sensitivity": "high"}),
    ("error rate rises above 5%", "checkout-api", None),
    ("Let me know when latency is unusually high", "checkout-api", {"sensitivity": "low"}),
    ("heartbeat goes silent for 10 minutes", "worker-7", None),
    ("signups decline slightly over the past week", "app", None),
    ("volume is 3 sigma unusual", "AAPL", None),
    ("price swings 3% within 15m", "EURUSD", {"namespace": "fx"}),
    ("make me a sandwich", "AAPL", None),  # no_primitive
    ("price rises within 3 hours", "AAPL", None),  # no_valid_strategy
]
DELIVERIES = [{"type": "notification"}, {"type": "webhook", "endpoint": "https://hooks.example.com/alert"}]


def _per_second(fn: Callable[[], object], seconds: float, repeats: int = 5) -> float:
    """Calls per second over about ``seconds``; best of ``repeats`` runs (as ``timeit`` reports)."""
    for _ in range(50):
        fn()
    n = 50
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / repeats / 10:
            break
        n *= 2
    iterations = max(n * 10, 1)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = max(best, iterations / (time.perf_counter() - start))
    return best


def run(seconds: float = 2.0) -> dict:
    cases = [(i, e, d, c) for (i, e, c) in INTENTS for d in DELIVERIES]
    state = {"k": 0}

    def compile_one() -> object:
        intent, entity, delivery, constraints = cases[state["k"] % len(cases)]
        state["k"] += 1
        try:
            return compile_intent(intent, entity, delivery, constraints)
        except CompileError as exc:
            return exc

    now = 1_800_000_000.0
    plans = [
        compile_intent(text, "AAPL", {"type": "notification"}).condition["plan"]
        for text in ("price goes above 200", "price rises significantly", "volume is unusual", "heartbeat stops")
    ]
    series = [(now - 86400 + i * 1440.0, 100.0 + (i % 7) * 0.5) for i in range(61)]
    ev = {"k": 0}

    def evaluate_one() -> object:
        ev["k"] += 1
        return evaluate_plan(plans[ev["k"] & 3], series, now)

    return {
        "compile_per_s": round(_per_second(compile_one, seconds)),
        "evaluate_per_s": round(_per_second(evaluate_one, seconds / 2)),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
