"""The baseline for the WebSocket fan-out benchmark: a bare flask-sock endpoint fed by one Redis
subscription, served by the same gunicorn settings as the API (``api/gunicorn_conf.py``, gevent).

``GET /ws/bare/<id>`` forwards every message published on ``bare:<id>`` as it arrives: one pattern
subscription per process, a dict of per-socket queues, no auth, no replay, no ordering check. It
is what a minimal "Redis pub/sub to WebSocket" bridge looks like, and the floor our endpoint is
measured against.
"""

from __future__ import annotations

import os
import queue
import threading

import redis
from flask import Flask
from flask_sock import Sock


class _BareHub:
    def __init__(self, url: str) -> None:
        self.url = url
        self.subs: dict[str, set[queue.Queue[str]]] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, channel: str, q: queue.Queue[str]) -> None:
        with self.lock:
            self.subs.setdefault(channel, set()).add(q)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True)
                self.thread.start()

    def remove(self, channel: str, q: queue.Queue[str]) -> None:
        with self.lock:
            self.subs.get(channel, set()).discard(q)

    def _run(self) -> None:
        pubsub = redis.Redis.from_url(self.url, decode_responses=True).pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("bare:*")
        for msg in pubsub.listen():
            if msg["type"] == "pmessage":
                for q in tuple(self.subs.get(msg["channel"], ())):
                    q.put(msg["data"])


def create_app() -> Flask:
    app = Flask("ws-baseline")
    sock = Sock(app)
    hub = _BareHub(os.environ["REDIS_URL"])  # bench-only factory: the URL comes from the bench

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @sock.route("/ws/bare/<channel_id>")
    def bare(ws, channel_id: str) -> None:  # type: ignore[no-untyped-def]
        channel = f"bare:{channel_id}"
        q: queue.Queue[str] = queue.Queue()
        hub.add(channel, q)
        try:
            while True:
                ws.send(q.get())
        finally:
            hub.remove(channel, q)

    return app
