"""A run message the broker lost is found by counting and replaced, once.

kombu's Redis transport pops a message (BRPOP) and records it as unacknowledged in a second
command; a Redis that stops between the two, or a connection that breaks while a worker holds the
message only in memory, leaves no copy, and the run would wait `queued` for the slow sweep
(WARDEN_REQUEUE_QUEUED_S). The maintenance sweep compares the queued runs with the run messages
that exist (outbox, broker queue, delivered lately and on their way to a run; a delivered message
that is old and drives no running run was left by a worker that died or lost its connection) and
gives the difference, oldest first, a new message. Here on a database and a Redis of the test's
own, with the relay's publisher and a real kombu consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from shared import outbox
from shared.celery_app import make_celery
from shared.db import Database
from shared.ids import new_id
from shared.store import executions, workspaces
from tests.workers.ownstack import fresh_database
from workers.maintenance import _broker_run_messages


def _queued_run(db: Database, workspace_id: str) -> str:
    eid = new_id("exec")
    with db.transaction() as cur:
        executions.insert(cur, executions.NewExecution(
            id=eid, workspace_id=workspace_id, task="lost message test", compliance_policy="default",
            policy_version="1", provider="local", model="local-planner-1", budget_cents=100,
            requested_permissions=None, effective_permissions=["read_documents"], denied_permissions=[],
            webhook_url=None))
    return eid


def test_a_queued_run_whose_message_was_lost_gets_one_new_one(settings: Any, tmp_path: Path) -> None:
    from warden.services import EmbeddedRedis

    r = EmbeddedRedis(tmp_path / "redis", persist=False)
    redis_url = r.start()
    db = Database(fresh_database(settings.database_url), maxconn=2)
    app = make_celery(settings.with_overrides(database_url=db.url, redis_url=redis_url, celery_broker_url=None))
    client = redis.Redis.from_url(redis_url)
    try:
        ws = workspaces.get_or_create_workspace(db, "lost").id
        ids = [_queued_run(db, ws) for _ in range(3)]

        def sweep(min_age_s: float = 0, young_s: float = 60) -> list[str]:
            queued, delivered = _broker_run_messages(redis_url)
            young = [name for name, age in delivered if age < young_s]
            return executions.requeue_unmessaged(db, queued, young, min_age_s=min_age_s)

        # Before the relay publishes: the messages are in the outbox, nothing is missing.
        assert _broker_run_messages(redis_url) == (0, [])
        assert sweep() == []
        assert outbox.drain(db, app) == 3
        assert _broker_run_messages(redis_url) == (3, [])
        assert sweep() == []

        # A worker takes one (kombu records it as unacknowledged, naming its run) and starts its
        # run: still whole, also once the message is old (it is the running run's).
        with app.connection_for_read() as conn:
            queue = conn.SimpleQueue("executions", no_ack=False)
            queue.consumer.qos(prefetch_count=1)  # one message, as a worker with one free slot takes
            message = queue.get(timeout=5)
            queued, delivered = _broker_run_messages(redis_url)
            assert queued == 2 and [name for name, _ in delivered] == [ids[0]]
            assert 0 <= delivered[0][1] < 5
            assert sweep() == []  # delivered lately: on its way to a run
            db.execute("UPDATE executions SET status = 'running', ticket = %s WHERE id = %s", (ids[0], ids[0]))
            assert sweep() == [] and sweep(young_s=0) == []
            message.ack()  # its run ended
            db.execute("UPDATE executions SET status = 'succeeded' WHERE id = %s", (ids[0],))
            queue.close()
        assert _broker_run_messages(redis_url) == (2, [])
        assert sweep() == []

        # The broker loses one of the two: exactly one queued run gets a new message, the oldest.
        assert client.rpop("executions") is not None
        assert sweep(min_age_s=60) == []  # not before it waited a while
        assert sweep() == [ids[1]]
        # Its new message waits in the outbox, then in the broker: nothing more is sent.
        assert sweep() == []
        assert outbox.drain(db, app) == 1
        assert _broker_run_messages(redis_url)[0] == 2
        assert sweep() == []

        # A worker takes a message and loses its connection without acknowledging it (its run
        # never starts): delivered lately, it counts; once old and driving no run, it does not.
        with app.connection_for_read() as conn:
            queue = conn.SimpleQueue("executions", no_ack=False)
            queue.consumer.qos(prefetch_count=1)
            assert queue.get(timeout=5) is not None
            assert sweep() == []
            assert sweep(young_s=0) == [ids[1]]
            queue.close()
        # A cancel-requested queued run is never given a new message.
        db.execute("UPDATE executions SET cancel_requested = true WHERE status = 'queued'")
        client.delete("executions", "unacked", "unacked_index")
        assert sweep() == []
    finally:
        client.close()
        db.close()
        r.stop()
