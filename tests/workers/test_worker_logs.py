"""A prefork worker child's log lines reach the worker's output (the compiler, evaluation and
maintenance pools run their tasks in such children)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support import wait_for
from tests.workers.conftest import stop_process, worker_log, worker_process


def test_prefork_child_logs_reach_the_worker_output(settings: Any, celery_app: Any) -> None:
    queue = f"logs-{uuid.uuid4().hex[:8]}"
    proc = worker_process(settings, f"logs-{uuid.uuid4().hex[:6]}", pool="prefork", concurrency=1, queues=queue)
    try:
        # A maintenance task given arguments it does not take fails in the child: Celery's error
        # line for it is written by the child's logging.
        celery_app.send_task("workers.maintenance.requeue_stale", args=["surplus"], queue=queue)
        wait_for(lambda: "TypeError" in worker_log(proc), timeout=60, interval=0.5,
                 what="the child's error line in the worker's output", on_fail=lambda: worker_log(proc))
        assert "workers.maintenance.requeue_stale" in worker_log(proc)
    finally:
        stop_process(proc)


def test_an_executions_worker_builds_its_model_clients_before_it_consumes(settings: Any) -> None:
    """The vendor SDKs are imported and the shared clients built at start (importing ``openai``
    costs about a second of CPU, which would otherwise land on the first burst of runs); a worker
    of another pool does not pay for them."""
    env = {"WARDEN_LOG_LEVEL": "INFO", "OPENAI_API_KEY": "sk-test-not-real"}
    runs = worker_process(settings, f"warm-{uuid.uuid4().hex[:6]}", queues=f"executions,warm-{uuid.uuid4().hex[:6]}",
                          **env)
    other = worker_process(settings, f"cold-{uuid.uuid4().hex[:6]}", pool="prefork", concurrency=1,
                           queues=f"cold-{uuid.uuid4().hex[:8]}", **env)
    try:
        wait_for(lambda: "model clients ready" in worker_log(runs), timeout=60, interval=0.5,
                 what="the executions worker's clients", on_fail=lambda: worker_log(runs))
        assert "model clients ready: openai" in worker_log(runs)  # no Anthropic key: left to its runs
        # Celery prints its banner (with the queues) once the worker is set up, signals sent
        wait_for(lambda: "[queues]" in worker_log(other), timeout=60, interval=0.5,
                 what="the other worker's banner", on_fail=lambda: worker_log(other))
        assert "model clients" not in worker_log(other)
    finally:
        stop_process(runs)
        stop_process(other)
