"""Guard micro-benchmark: mean microseconds per `Guard.verify` on a typical HIPAA `send_email`
call (a redacted discharge summary, no signing) and per certificate issued (verify result in
hand: canonical JSON, two SHA-256s, one Ed25519 signature). Pure CPU, no services needed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from guard import Guard, SigningKey, ToolCall, VerifyContext, issue_certificate, load_policy

BODY = (
    "Discharge summary for [REDACTED:NAME] (MRN [REDACTED:MRN]), admitted [REDACTED:DATE] with "
    "community-acquired pneumonia. Treated with IV ceftriaxone 1 g daily and azithromycin 500 mg, "
    "transitioned to oral antibiotics for 5 days. Afebrile for 48 hours, ambulating, tolerating diet. "
    "Follow up with primary care in 1 week; return if fever recurs or breathing worsens."
)


def _mean_us(fn: Callable[[], object], seconds: float, repeats: int = 5) -> float:
    """Mean microseconds per call, over about `seconds` in total.

    The time is split into `repeats` equal runs and the lowest run mean is reported (as `timeit`
    does): on a shared machine the slower runs measure other processes, not this code.
    """
    for _ in range(200):
        fn()
    n = 100
    while True:  # calibrate: how many calls fill a tenth of a run
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / repeats / 10:
            break
        n *= 2
    iterations = max(n, int(n * (seconds / repeats) / elapsed))
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        means.append((time.perf_counter() - start) / iterations * 1e6)
    return min(means)


def run(seconds: float = 0.75) -> dict:
    policy = load_policy("hipaa")
    context = VerifyContext(
        execution_id="exec_bench",
        policy=policy,
        effective_permissions=policy.max_permissions,
        budget_cents=2000,
        spent_cents=140,
        documents={"doc_1": {"labels": ["phi"], "content": "Patient: Jane Doe, MRN 889123"}},
        record_names=("Jane Doe",),
    )
    arguments = {"to": "care-team@example.org", "subject": "Discharge summary", "body": BODY}
    call = ToolCall("send_email", arguments)
    decision = Guard.verify(call, context)
    if not decision.allowed:
        raise RuntimeError(f"benchmark call was refused: {decision.violations}")
    key = SigningKey.from_seed(bytes(32))
    counter = iter(range(1, 1 << 62))

    def sign() -> object:
        seq = next(counter)
        return issue_certificate(
            key,
            certificate_id=f"cert_{seq}",
            execution_id="exec_bench",
            seq=seq,
            call=call,
            decision=decision,
            policy=policy,
            issued_at="2026-11-23T10:00:00Z",
            prev_hash="0" * 64,
        )

    return {
        # A new ToolCall each time, as the executor makes one per call: a call caches how its
        # arguments read to the detectors (ToolCall.scan_text), and reusing one would time the cache.
        "verify_us": round(_mean_us(lambda: Guard.verify(ToolCall("send_email", arguments), context), seconds), 2),
        "sign_us": round(_mean_us(sign, seconds), 2),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
