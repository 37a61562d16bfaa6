"""The baseline for intake: a bare Flask endpoint that does one INSERT and one Redis LPUSH,
served by the same gunicorn settings as the API (``api/gunicorn_conf.py``)."""

from __future__ import annotations

import json
import os
import threading
import uuid

import psycopg2.pool
import redis
from flask import Flask, request


def create_app() -> Flask:
    app = Flask("baseline")
    state: dict[str, object] = {}

    def pool() -> psycopg2.pool.ThreadedConnectionPool:
        if state.get("pid") != os.getpid():
            state["pool"] = psycopg2.pool.ThreadedConnectionPool(1, 20, os.environ["DATABASE_URL"])
            state["pool"].minconn = 20  # keep returned connections, as shared/db.py does (no reconnects)
            state["slots"] = threading.BoundedSemaphore(20)  # wait for a connection, as the API does
            state["redis"] = redis.Redis.from_url(os.environ["REDIS_URL"])
            state["pid"] = os.getpid()
        return state["pool"]  # type: ignore[return-value]

    @app.post("/baseline")
    def baseline():  # type: ignore[no-untyped-def]
        body = request.get_json(force=True)
        p = pool()
        state["slots"].acquire()  # type: ignore[attr-defined]
        conn = p.getconn()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                job_id = uuid.uuid4().hex
                cur.execute("INSERT INTO bench_baseline (id, body) VALUES (%s, %s)", (job_id, json.dumps(body)))
        finally:
            p.putconn(conn)
            state["slots"].release()  # type: ignore[attr-defined]
        state["redis"].lpush("bench_baseline_queue", job_id)  # type: ignore[attr-defined]
        return {"id": job_id, "status": "queued"}, 201

    return app
