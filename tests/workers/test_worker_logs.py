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
