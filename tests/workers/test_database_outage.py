"""A worker message consumed while PostgreSQL is down is retried, not acknowledged and dropped.

A real delivery worker (subprocess) on a PostgreSQL and a Redis this test owns: the database is
stopped, an execution callback is published, the worker takes it and fails to reach the
database; once the database is back, the callback is delivered without anything re-publishing it
(no sweep runs here: the delivery worker consumes only its own queue).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.fakes.receiver import Receiver
from tests.support import wait_for
from tests.workers.ownstack import WorkerProcess, service_dir


def test_delivery_consumed_during_outage_is_retried(settings: Any, tmp_path: Path):
    with service_dir() as own:
        _outage(settings, tmp_path, own)


def _outage(settings: Any, tmp_path: Path, own: Path) -> None:
    from guard import load_policy, resolve_permissions
    from shared.celery_app import make_celery
    from shared.db import Database
    from shared.ids import new_id
    from shared.migrate import migrate
    from shared.store import executions, workspaces
    from warden.services import EmbeddedPostgres, EmbeddedRedis

    pg = EmbeddedPostgres(own / "pg")
    db_url = pg.start("warden")
    migrate(db_url)
    redis_srv = EmbeddedRedis(own / "redis", persist=False)
    redis_url = redis_srv.start()
    rec = Receiver()
    worker = WorkerProcess(tmp_path / "worker.log", "delivery", "-P", "threads", "-c", "2",
                           DATABASE_URL=db_url, REDIS_URL=redis_url, WARDEN_ALLOW_PRIVATE_WEBHOOKS="1")
    app = make_celery(settings.with_overrides(database_url=db_url, redis_url=redis_url))
    try:
        db = Database(db_url, maxconn=2)
        ws = workspaces.get_or_create_workspace(db, "outage")
        policy = load_policy("default")
        res = resolve_permissions(policy, None)
        eid, dlv = new_id("exec"), new_id("dlv")
        with db.transaction() as cur:
            executions.insert(cur, executions.NewExecution(
                id=eid, workspace_id=ws.id, task="t", compliance_policy=policy.name, policy_version=policy.version,
                provider="local", model="local", budget_cents=100, requested_permissions=None,
                effective_permissions=res.effective, denied_permissions=res.denied, webhook_url=rec.url + "/hook",
                queued_event={}))
            cur.execute("UPDATE executions SET status = 'succeeded', finished_at = now() WHERE id = %s", (eid,))
            cur.execute("INSERT INTO webhook_deliveries (id, workspace_id, execution_id, url, event_type, webhook_id)"
                        " VALUES (%s, %s, %s, %s, 'execution.completed', %s)",
                        (dlv, ws.id, eid, rec.url + "/hook", "msg_" + dlv))
        db.close()
        wait_for(lambda: app.control.ping(timeout=0.5), timeout=30, interval=0.2)

        pg.stop()
        app.send_task("workers.delivery.execution_webhook", args=[dlv], task_id=f"outage-{dlv}")
        # Taken while the database is down, and put back for a later try.
        wait_for(lambda: re.search(rf"outage-{dlv}\] retry: Retry in", worker.log()), timeout=20)
        assert rec.requests == []

        assert pg.start("warden") == db_url
        wait_for(lambda: len(rec.requests) == 1, timeout=45)
        db = Database(db_url, maxconn=1)
        row = wait_for(lambda: (r := db.fetchone("SELECT status, attempt_count FROM webhook_deliveries WHERE id = %s",
                                                  (dlv,)))["status"] == "delivered" and r, timeout=10)
        assert row["attempt_count"] == 1
        db.close()
        assert worker.alive()
    finally:
        worker.stop()
        rec.stop()
        redis_srv.stop()
        pg.stop()
