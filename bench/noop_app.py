"""The bare Celery baseline: a no-op task on the same broker, worker settings and machine."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("noop", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
             backend=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1,
                task_default_queue="noop", worker_hijack_root_logger=False)


@app.task(name="bench.noop")
def noop() -> int:
    return 1
