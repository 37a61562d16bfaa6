"""Webhook receivers that misbehave do not hold up the others.

100 execution callbacks at once, through a real delivery worker (subprocess, threads pool) on its
own Redis and database: 5 endpoints accept the request and never answer, 5 answer a 200 header
and then drip the body one byte a second (no per-read timeout ever fires on those). The other 90
are delivered on time; each attempt on a bad endpoint ends at the total deadline; and while an
attempt is in flight its delivery row is not locked and no transaction is open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_for
from tests.workers.ownstack import WorkerProcess, fresh_database

DEADLINE_S = 3.0
GOOD, HANG, DRIP = 90, 5, 5


class Endpoints:
    """One listener, one endpoint per path: ``/ok/<n>``, ``/hang/<n>``, ``/drip/<n>``."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                outer.arrived.setdefault(self.path, time.monotonic())
                self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                if self.path.startswith("/hang/"):
                    outer.release.wait(60)
                    return
                if self.path.startswith("/drip/"):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 600\r\n\r\n")
                    self.wfile.flush()
                    for _ in range(600):
                        if outer.release.wait(1.0):
                            return
                        self.wfile.write(b".")
                        self.wfile.flush()
                    return
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # (the listen backlog: 100 clients connect at once)
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture()
def endpoints() -> Iterator[Endpoints]:
    e = Endpoints()
    yield e
    e.stop()


def test_hanging_and_dripping_receivers_do_not_delay_the_others(settings: Any, tmp_path: Path, endpoints: Endpoints):
    from guard import load_policy, resolve_permissions
    from shared import outbox
    from shared.celery_app import make_celery
    from shared.db import Database
    from shared.ids import new_id
    from shared.store import executions, workspaces
    from warden.services import EmbeddedRedis

    redis_srv = EmbeddedRedis(tmp_path / "redis", persist=False)
    redis_url = redis_srv.start()
    db_url = fresh_database(settings.database_url)
    db = Database(db_url, maxconn=4)
    worker = WorkerProcess(tmp_path / "worker.log", "delivery", "-P", "threads", "-c", "24",
                           DATABASE_URL=db_url, REDIS_URL=redis_url, WARDEN_WEBHOOK_TIMEOUT_S=str(DEADLINE_S),
                           loglevel="WARNING",
                           WARDEN_WEBHOOK_BACKOFF_S="30", WARDEN_ALLOW_PRIVATE_WEBHOOKS="1")
    app = make_celery(settings.with_overrides(database_url=db_url, redis_url=redis_url))
    try:
        ws = workspaces.get_or_create_workspace(db, "receivers")
        policy = load_policy("default")
        res = resolve_permissions(policy, None)
        paths = ([f"/ok/{n}" for n in range(GOOD)] + [f"/hang/{n}" for n in range(HANG)]
                 + [f"/drip/{n}" for n in range(DRIP)])
        deliveries: dict[str, str] = {}
        with db.transaction() as cur:
            for path in paths:
                eid = new_id("exec")
                executions.insert(cur, executions.NewExecution(
                    id=eid, workspace_id=ws.id, task="t", compliance_policy=policy.name,
                    policy_version=policy.version, provider="local", model="local", budget_cents=100,
                    requested_permissions=None, effective_permissions=res.effective,
                    denied_permissions=res.denied, webhook_url=endpoints.url + path, queued_event={}))
                deliveries[path] = new_id("dlv")
                cur.execute("UPDATE executions SET status = 'succeeded', finished_at = now() WHERE id = %s", (eid,))
                cur.execute("INSERT INTO webhook_deliveries (id, workspace_id, execution_id, url, event_type,"
                            " webhook_id) VALUES (%s, %s, %s, %s, 'execution.completed', %s)",
                            (deliveries[path], ws.id, eid, endpoints.url + path, "msg_" + deliveries[path]))
            cur.execute("DELETE FROM outbox")  # the runs themselves are not for this worker
            cur.execute("INSERT INTO outbox (task_name, args, queue) SELECT 'workers.delivery.execution_webhook',"
                        " jsonb_build_array(i), 'delivery' FROM unnest(%s::text[]) AS i",
                        ([deliveries[p] for p in paths[GOOD:] + paths[:GOOD]],))  # the bad ones first
        # The worker is up once it answers a ping; then publish all 100 at once.
        wait_for(lambda: app.control.ping(timeout=0.5), timeout=30, interval=0.2)
        started = db.fetchone("SELECT now() AS t")["t"]
        assert outbox.drain(db, app) == len(paths)

        # While attempts on the bad endpoints are in flight (claimed, their receivers reached): no
        # lock on those rows, no open transaction.
        bad = [deliveries[p] for p in paths[GOOD:]]
        in_flight = wait_for(lambda: [r["id"] for r in db.fetchall(
            "SELECT id FROM webhook_deliveries WHERE id = ANY(%s) AND claim_token IS NOT NULL", (bad,))]
            if any(p in endpoints.arrived for p in paths[GOOD:]) else None, timeout=10, interval=0.1)
        with db.transaction() as cur:
            cur.execute("SELECT id, claim_token FROM webhook_deliveries WHERE id = ANY(%s) FOR UPDATE NOWAIT",
                        (in_flight,))
            # Locked by the test while a worker is attempting (at least) one of them.
            assert any(r["claim_token"] for r in cur.fetchall())
            # (Claims and records are short transactions; one held across a POST lives as long as it.)
            cur.execute("SELECT application_name, state, query FROM pg_stat_activity WHERE datname = current_database()"
                        " AND xact_start < now() - interval '500 milliseconds' AND pid <> pg_backend_pid()")
            assert cur.fetchall() == []

        good = [deliveries[p] for p in paths[:GOOD]]

        def count(sql: str, ids: list[str]) -> int:
            return int(db.fetchone(f"SELECT count(*) AS n FROM webhook_deliveries WHERE id = ANY(%s) AND {sql}",
                                   (ids,))["n"])

        wait_for(lambda: count("status = 'delivered'", good) == GOOD, timeout=20, interval=0.2)
        took = sorted(r["s"] for r in db.fetchall(
            "SELECT extract(epoch FROM delivered_at - %s)::float AS s FROM webhook_deliveries WHERE id = ANY(%s)",
            (started, good)))
        p99 = took[int(0.99 * (len(took) - 1))]
        print(f"receivers: p50 {took[len(took) // 2]:.2f}s p99 {p99:.2f}s max {took[-1]:.2f}s")
        assert p99 < 2.0, f"p99 {p99:.2f}s; slowest {took[-5:]}"

        # Each attempt on a bad endpoint ended at the deadline, recorded as a retry.
        wait_for(lambda: count("attempt_count >= 1", bad) == HANG + DRIP, timeout=15, interval=0.2)
        assert all(p in endpoints.arrived for p in paths[GOOD:])  # each was reached, then cut off
        rows = db.fetchall("SELECT d.url, a.error, a.duration_ms, d.status FROM webhook_attempts a"
                           " JOIN webhook_deliveries d ON d.id = a.delivery_id"
                           " WHERE a.attempt = 1 AND d.id = ANY(%s)", ([deliveries[p] for p in paths[GOOD:]],))
        assert len(rows) == HANG + DRIP
        for r in rows:
            assert r["status"] == "pending" and "timed out" in r["error"], r
            assert DEADLINE_S * 1000 - 50 <= r["duration_ms"] <= DEADLINE_S * 1000 + 1500, r
        assert worker.alive()
    finally:
        worker.stop()
        db.close()
        redis_srv.stop()
