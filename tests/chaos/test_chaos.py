"""The chaos suite (bench/chaos.py) at a small scale: every case on one real stack (embedded
PostgreSQL and Redis it stops and freezes, the API under gunicorn, the relay, beat, real
``celery worker -P gevent`` processes killed with real signals, the wire fake of the model).
``make chaos`` runs the same cases at the issue's scale and prints the figures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import chaos
from bench.chaos_stack import Stack


@pytest.fixture(scope="module")
def chaos_stack() -> Iterator[Stack]:
    stack = Stack(lease_s=chaos.SMALL.lease_s, time_limit_s=30).start()
    yield stack
    stack.stop()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("case", list(chaos.CASES))
def test_case(chaos_stack: Stack, case: str) -> None:
    try:
        result = chaos.CASES[case](chaos_stack, chaos.SMALL)
    except BaseException:  # a timeout included: say what the stack looked like
        print(chaos_stack.diagnose())
        raise
    print(result.line())
    print(result.figures)
    assert result.ok, result.line() + "\n" + chaos_stack.diagnose()
    assert result.submitted > 0 and result.terminal == result.submitted
