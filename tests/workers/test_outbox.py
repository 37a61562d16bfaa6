"""The outbox: a broker outage loses no execution and never hangs a request."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import pytest
import redis as redis_lib

from shared.config import Settings
from tests.support import ApiClient, LiveServer, wait_for


@pytest.fixture()
def isolated(settings: Settings, tmp_path) -> Any:  # type: ignore[no-untyped-def]
    """A database of its own (so the session relay cannot publish its rows) and a broker port
    with nothing listening on it yet."""
    from urllib.parse import urlsplit, urlunsplit

    from shared.db import Database
    from shared.migrate import create_database, migrate
    from warden.services import EmbeddedRedis, free_port

    name = f"warden_outbox_{secrets.token_hex(4)}"
    parts = urlsplit(settings.database_url)
    create_database(urlunsplit(parts._replace(path="/postgres")), name)
    db_url = urlunsplit(parts._replace(path="/" + name))
    migrate(db_url)
    port = free_port()
    broker = EmbeddedRedis(tmp_path / "broker", persist=False)
    s = settings.with_overrides(database_url=db_url, celery_broker_url=f"redis://127.0.0.1:{port}/0")
    db = Database(db_url, maxconn=4)
    yield s, db, broker, port
    broker.stop()
    db.close()


def test_broker_outage_loses_nothing_and_publishes_exactly_once(isolated: Any) -> None:
    from api.app import create_app
    from shared.celery_app import make_celery
    from shared.outbox import pending_count, run_relay
    from shared.store import workspaces

    settings, db, broker, port = isolated
    ws = workspaces.get_or_create_workspace(db, "outbox")
    srv = LiveServer(create_app(settings))
    srv.start()
    stop = threading.Event()
    relay = threading.Thread(target=run_relay, args=(db, make_celery(settings, main="relay-test"),
                                                     settings.redis_url),
                             kwargs={"sweep_s": 0.3, "stop": stop}, daemon=True)
    try:
        client = ApiClient(srv.url, workspaces.create_key(db, ws.id))
        relay.start()
        t0 = time.monotonic()
        ids = [client.post("/api/v1/tasks", {"task": f"during outage {i}"}).json()["execution_id"]
               for i in range(3)]
        assert time.monotonic() - t0 < 3.0, "intake must not wait for the broker"
        time.sleep(1.0)  # the API's dispatcher and the relay try, fail, keep the rows
        assert pending_count(db) == 3
        row = db.fetchone("SELECT max(attempts) AS a, max(last_error) AS e,"
                          " count(*) FILTER (WHERE publish_after IS NOT NULL) AS held FROM outbox")
        assert row["a"] >= 1 and row["e"]
        assert row["held"] == 0  # a refused dispatch hands its rows to the relay at once

        broker.data_dir.mkdir(parents=True, exist_ok=True)
        # Bring the broker up on the very port the settings name.
        (broker.data_dir / "port").write_text(str(port))
        url = broker.start()
        assert url.endswith(f":{port}/0")
        wait_for(lambda: pending_count(db) == 0, timeout=15)
        time.sleep(1.0)  # give a would-be duplicate publish time to happen
        queued = redis_lib.Redis.from_url(url).lrange("executions", 0, -1)
        assert len(queued) == 3
        bodies = b"".join(queued)
        for eid in ids:
            assert bodies.count(eid.encode()) == 1
    finally:
        stop.set()
        relay.join(5)
        srv.stop()


def test_a_row_committed_without_a_wake_up_is_still_run_once(stack: LiveServer, db, workspace,  # type: ignore[no-untyped-def]
                                                               celery_app) -> None:
    """Nobody calls wake(): the relay's periodic poll finds the row anyway."""
    from guard import load_policy
    from shared.ids import new_id
    from shared.outbox import drain
    from shared.store import executions

    policy = load_policy("default")
    eid = new_id("exec")
    with db.transaction() as cur:
        executions.insert(cur, executions.NewExecution(
            id=eid, workspace_id=workspace[0], task="no wake-up", compliance_policy=policy.name,
            policy_version=policy.version, provider="local", model="local-planner-1", budget_cents=1000,
            requested_permissions=None, effective_permissions=list(policy.default_permissions),
            denied_permissions=[], webhook_url=None))
    client = ApiClient(stack.url, workspace[1])
    wait_for(lambda: client.get(f"/api/v1/executions/{eid}").json()["status"] != "queued", timeout=10)
    # Its row is published by the relay's poll. (The run itself may have been started by another
    # message first: each run message runs the next queued run by fair share.)
    wait_for(lambda: db.fetchone("SELECT count(*) AS n FROM outbox WHERE args = jsonb_build_array(%s::text)"
                                 " AND dispatched_at IS NULL", (eid,))["n"] == 0, timeout=10)
    assert drain(db, celery_app) == 0  # nothing left to publish twice
    events = client.get(f"/api/v1/executions/{eid}/events").json()["items"]
    assert [e["type"] for e in events].count("execution.started") == 1


def test_duplicate_message_runs_once(stack: LiveServer, client: ApiClient, celery_app) -> None:  # type: ignore[no-untyped-def]
    eid = client.post("/api/v1/tasks", {"task": "dup"}).json()["execution_id"]
    for _ in range(3):
        celery_app.send_task("workers.executions.run", args=[eid], queue="executions")
    wait_for(lambda: client.get(f"/api/v1/executions/{eid}").json()["status"] != "queued")
    time.sleep(0.5)
    events = client.get(f"/api/v1/executions/{eid}/events").json()["items"]
    assert [e["type"] for e in events].count("execution.started") == 1
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_intake_publishes_its_own_run_messages_without_the_relay(isolated: Any) -> None:
    """No relay runs: the API process that committed the executions publishes their run messages
    (once each, with the outbox row's task id) and marks the rows dispatched."""
    from api.app import create_app
    from shared.outbox import pending_count
    from shared.store import workspaces

    settings, db, broker, port = isolated
    (broker.data_dir).mkdir(parents=True, exist_ok=True)
    (broker.data_dir / "port").write_text(str(port))
    url = broker.start()
    ws = workspaces.get_or_create_workspace(db, "dispatch")
    srv = LiveServer(create_app(settings))
    srv.start()
    try:
        client = ApiClient(srv.url, workspaces.create_key(db, ws.id))
        ids = [client.post("/api/v1/tasks", {"task": f"dispatched {i}"}).json()["execution_id"] for i in range(3)]
        ids.append(client.post("/api/v1/tasks", {"task": "keyed"}, headers={"Idempotency-Key": "k-1"})
                   .json()["execution_id"])
        wait_for(lambda: pending_count(db) == 0, timeout=5)
        rows = db.fetchall("SELECT id, args, attempts, dispatched_at FROM outbox ORDER BY id")
        assert [r["args"] for r in rows] == [[eid] for eid in ids]
        assert all(r["attempts"] == 1 for r in rows)
        queued = redis_lib.Redis.from_url(url).lrange("executions", 0, -1)
        assert len(queued) == 4
        bodies = b"".join(queued)
        for eid, row in zip(ids, rows, strict=True):
            assert bodies.count(eid.encode()) == 1
            assert bodies.count(f"outbox-{row['id']}".encode()) >= 1
    finally:
        srv.stop()


def test_a_busy_api_leaves_its_run_messages_to_the_relay(isolated: Any) -> None:
    """Dispatcher.takes: a group bigger than OWN_GROUP (a loaded API process) is written for the
    relay (no publish_after) and the API publishes none of it; a lone request is the API's."""
    from concurrent.futures import ThreadPoolExecutor

    from api.app import create_app
    from api.dispatch import OWN_GROUP
    from shared.outbox import pending_count
    from shared.store import workspaces

    settings, db, broker, port = isolated
    broker.data_dir.mkdir(parents=True, exist_ok=True)
    (broker.data_dir / "port").write_text(str(port))
    broker.start()
    app = create_app(settings)
    svc = app.extensions["warden"]
    srv = LiveServer(app)
    srv.start()
    try:
        client = ApiClient(srv.url, workspaces.create_key(db, workspaces.get_or_create_workspace(db, "busy").id))
        lone = client.post("/api/v1/tasks", {"task": "lone"}).json()["execution_id"]
        wait_for(lambda: pending_count(db) == 0, timeout=5)  # published and marked by the API
        assert svc.dispatcher.published == 1
        # Hold the writer's statement so that a crowd queues behind it and goes as one big group.
        with db.connection() as conn:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
                with ThreadPoolExecutor(3 * OWN_GROUP) as pool:
                    futures = [pool.submit(client.post, "/api/v1/tasks", {"task": f"crowd {i}"})
                               for i in range(3 * OWN_GROUP)]
                    time.sleep(1.0)  # the first request holds the writer; the rest queue behind it
                    conn.rollback()  # release the lock
                    crowd = [f.result().json()["execution_id"] for f in futures]
        rows = {r["args"][0]: r for r in db.fetchall("SELECT args, publish_after, dispatched_at FROM outbox")}
        assert rows[lone]["dispatched_at"] is not None
        relay_rows = [rows[e] for e in crowd if rows[e]["publish_after"] is None]
        assert len(relay_rows) >= 2 * OWN_GROUP  # the big group went to the relay...
        assert all(r["dispatched_at"] is None for r in relay_rows)  # ...and nobody else published it
        assert svc.dispatcher.published <= 1 + OWN_GROUP
    finally:
        srv.stop()
