"""The bare Celery peer of an agent run, behind the same kind of HTTP front as ours.

``create_app()``: a bare Flask endpoint (served by the API's gunicorn settings) that sends a
no-op task and answers 201 with its id; the task, on a worker started with the Procfile's
executions settings, publishes one terminal event on ``noop:<id>`` in the shape ours publishes
(``{"type": "execution.succeeded", "execution_id": …}``), so one client and one completion
watcher serve both sides of ``bench_e2e``."""

from __future__ import annotations

import json
import os
import uuid

import redis
from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("noop", broker=REDIS_URL)
app.conf.update(task_serializer="json", accept_content=["json"], worker_prefetch_multiplier=1,
                task_default_queue="noop", worker_hijack_root_logger=False, task_ignore_result=True)
_redis: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()
    if pid not in _redis:
        _redis[pid] = redis.Redis.from_url(REDIS_URL)
    return _redis[pid]


@app.task(name="bench.noop")
def noop(job_id: str) -> None:
    _client().publish(f"noop:{job_id}", json.dumps({"type": "execution.succeeded", "execution_id": job_id},
                                                   separators=(",", ":")))


def create_app():  # type: ignore[no-untyped-def]
    from flask import Flask, request

    web = Flask("noop")

    @web.post("/noop")
    def submit():  # type: ignore[no-untyped-def]
        request.get_json(force=True)
        job_id = uuid.uuid4().hex
        app.send_task("bench.noop", args=[job_id])
        return {"execution_id": job_id, "status": "queued"}, 201

    return web
