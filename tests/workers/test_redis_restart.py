"""Redis restarted under a live stack: the executions worker (a real subprocess, prefork as in
the Procfile), the API and the outbox relay all reconnect by themselves.

Each test owns its Redis (an EmbeddedRedis in a temp dir, stopped and started on its port) and
its own database on the session's PostgreSQL server, so nothing it publishes reaches the session
worker and its faults touch no other test.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ApiClient, LiveServer, wait_for
from tests.workers.ownstack import WorkerProcess, fresh_database

TERMINAL = ("succeeded", "blocked", "error", "cancelled")


class Stack:
    """API (live server), relay (thread) and one executions worker (subprocess) on one Redis."""

    def __init__(self, settings: Any, tmp: Path, fake_llm: Any) -> None:
        from api.app import create_app
        from shared.celery_app import make_celery
        from shared.db import Database
        from shared.outbox import run_relay
        from shared.store import workspaces
        from warden.services import EmbeddedRedis

        self.redis = EmbeddedRedis(tmp / "redis")
        redis_url = self.redis.start()
        self.settings = settings.with_overrides(database_url=fresh_database(settings.database_url),
                                                redis_url=redis_url)
        self.db = Database(self.settings.database_url, maxconn=4)
        ws = workspaces.get_or_create_workspace(self.db, "redis-restart")
        self.server = LiveServer(create_app(self.settings))
        self.server.start()
        self.client = ApiClient(self.server.url, workspaces.create_key(self.db, ws.id))
        self._stop = threading.Event()
        self._relay = threading.Thread(target=run_relay, args=(self.db, make_celery(self.settings), redis_url),
                                       kwargs={"sweep_s": 0.5, "stop": self._stop}, daemon=True)
        self._relay.start()
        self.worker = WorkerProcess(tmp / "worker.log", "executions", "-c", "2", "--prefetch-multiplier", "1",
                                    DATABASE_URL=self.settings.database_url, REDIS_URL=redis_url,
                                    OPENAI_BASE_URL=fake_llm.url + "/v1", OPENAI_API_KEY="sk-test-not-real")

    def submit(self, n: int = 1, **body: Any) -> list[str]:
        ids = []
        for _ in range(n):
            r = self.client.post("/api/v1/tasks", json={"task": "Say hello", **body})
            assert r.status_code == 201, r.text
            ids.append(r.json()["execution_id"])
        return ids

    def submit_for_relay(self) -> str:
        """A run whose outbox row only the relay publishes (no API process holds it)."""
        from guard import load_policy, resolve_permissions
        from shared.ids import new_id
        from shared.store import executions

        policy = load_policy("default")
        res = resolve_permissions(policy, None)
        eid = new_id("exec")
        with self.db.transaction() as cur:
            cur.execute("SELECT id FROM workspaces WHERE name = 'redis-restart'")
            ws_id = cur.fetchone()["id"]
            executions.insert(cur, executions.NewExecution(
                id=eid, workspace_id=ws_id, task="Say hello", compliance_policy=policy.name,
                policy_version=policy.version, provider="local", model="local", budget_cents=1000,
                requested_permissions=None, effective_permissions=res.effective, denied_permissions=res.denied,
                webhook_url=None, queued_event={}))
        return eid

    def status(self, execution_id: str) -> str:
        return str(self.client.get(f"/api/v1/executions/{execution_id}").json()["status"])

    def restart_redis(self) -> None:
        self.redis.stop()
        url = self.redis.start()
        assert url == self.settings.redis_url  # same port: every client must find it again by itself

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()
        self.server.stop()
        self._relay.join(5)
        self.db.close()
        self.redis.stop()


@pytest.fixture()
def stack_on_own_redis(settings: Any, tmp_path: Path, fake_llm: Any) -> Iterator[Stack]:
    s = Stack(settings, tmp_path, fake_llm)
    try:
        yield s
    finally:
        s.stop()


def test_worker_api_and_relay_survive_three_redis_restarts(stack_on_own_redis: Stack, fake_llm: Any):
    s = stack_on_own_redis
    slow = fake_llm.script(f"slow-{secrets.token_hex(4)}", [{"text": "hello", "delay": 1.5}])
    first = s.submit()[0]
    wait_for(lambda: s.status(first) == "succeeded", timeout=60)
    for n in range(3):
        # Runs in flight when Redis goes: the worker holds unacknowledged messages, which is what
        # made closing the old broker connection raise AttributeError and stop the worker.
        batch = s.submit(4, provider="openai", model=slow)
        wait_for(lambda b=batch: sum(s.status(e) == "running" for e in b) >= 2, timeout=30)
        s.restart_redis()
        restarted = time.monotonic()
        after = s.submit()[0]  # the API answers 201 on its own (its Redis clients reconnect)
        relayed = s.submit_for_relay()  # published by the relay alone (its subscription and publisher reconnect)
        wait_for(lambda a=after, r=relayed: s.status(a) == s.status(r) == "succeeded", timeout=30)
        took = time.monotonic() - restarted
        assert s.worker.alive(), f"worker exited after restart {n + 1}:\n{s.worker.log()[-3000:]}"
        assert took < 30, f"restart {n + 1}: consumed again after {took:.1f}s"
    log = s.worker.log()
    assert "Unrecoverable error" not in log, log[-3000:]
    assert log.count("Connected to") >= 4  # it did lose and re-establish the broker connection each time


def test_channel_closed_after_its_connection_restores_unacked(tmp_path: Path):
    """The sequence behind the worker's "Unrecoverable error": Redis goes away while messages
    are delivered and unacknowledged on two channels. Closing the connection closes its channels
    one by one; the first one's close fails (restoring its messages needs Redis), which ends the
    loop, and the connection lets go of its transport anyway. The other channel is closed later,
    and restoring its messages needs a Redis client, built from the transport that is gone."""
    import redis
    from kombu import Connection, Exchange, Queue

    from shared.kombu_redis import TRANSPORT
    from warden.services import EmbeddedRedis

    r = EmbeddedRedis(tmp_path / "redis")
    url = r.start()
    try:
        conn = Connection(url, transport=TRANSPORT)
        work = Queue("work", Exchange("work", type="direct"), "work")
        producer = conn.Producer(conn.default_channel)
        for n in range(2):
            producer.publish({"n": n}, exchange=work.exchange, routing_key="work", declare=[work])
        left, right = conn.channel(), conn.channel()
        assert left.basic_get("work", no_ack=False) is not None  # delivered, not acknowledged
        assert right.basic_get("work", no_ack=False) is not None

        r.stop()
        conn.release()  # `right` fails to restore its message (Redis is gone): `left` stays open
        assert left.connection.client is None and not left.closed
        assert r.start() == url
        left.close()  # raised AttributeError ('NoneType' object has no attribute 'hostname')
        assert left.closed
        assert redis.Redis.from_url(url).llen("work") == 1  # its unacked message is back in the queue
    finally:
        r.stop()
