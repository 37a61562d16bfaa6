"""An execution whose broker message was lost is enqueued again by the beat's requeue pass, and
only then: fresh ones are left alone, and a second pass right after does nothing."""

from __future__ import annotations

from typing import Any

from guard import load_policy
from shared import outbox
from shared.ids import new_id
from shared.store import executions
from tests.workers.conftest import wait_no_run_messages, wait_terminal


def _lost(db: Any, workspace_id: str, *, status: str = "queued", age_s: int = 0) -> str:
    """An execution as if its message had been published and then lost by the broker."""
    policy = load_policy("default")
    eid = new_id("exec")
    new = executions.NewExecution(
        id=eid, workspace_id=workspace_id, task="List my documents", compliance_policy=policy.name,
        policy_version=policy.version, provider="local", model="local-planner-1", budget_cents=1000,
        requested_permissions=None, effective_permissions=["read_documents"], denied_permissions=[],
        webhook_url=None)
    with db.transaction() as cur:
        executions.insert(cur, new)
        cur.execute("UPDATE outbox SET dispatched_at = now() WHERE args = jsonb_build_array(%s::text)", (eid,))
        cur.execute("UPDATE executions SET status = %s, updated_at = now() - make_interval(secs => %s)"
                    " WHERE id = %s", (status, age_s, eid))
    return eid


def test_lost_queued_and_orphaned_running_executions_are_requeued(stack, client, db, settings, workspace, celery_app,
                                                                   worker) -> None:
    # A run message left over from an earlier test would start the stale queued run before the
    # pass finds it (a message starts the oldest queued run): none may be about.
    wait_no_run_messages(celery_app, worker, db, settings.broker_url)
    stale_queued = _lost(db, workspace[0], age_s=3600)
    orphaned_running = _lost(db, workspace[0], status="running", age_s=3600)
    fresh = _lost(db, workspace[0])

    ids = executions.requeue_stale(db, queued_s=600, running_s=1800)
    assert stale_queued in ids and orphaned_running in ids and fresh not in ids
    outbox.wake(__import__("redis").Redis.from_url(settings.redis_url))

    for eid in (stale_queued, orphaned_running):
        e = wait_terminal(client, eid)
        assert e["status"] == "succeeded", e
        types = [ev["type"] for ev in client.get(f"/api/v1/executions/{eid}/events").json()["items"]]
        assert types.count("execution.succeeded") == 1
    assert client.get(f"/api/v1/executions/{fresh}").json()["status"] == "queued"
    # Touched when requeued: the next pass does not enqueue them again.
    assert not set(executions.requeue_stale(db, queued_s=600, running_s=1800)) & {stale_queued, fresh}
    # A queued run without a message would be taken by a later test's message: end it.
    db.execute("UPDATE executions SET status = 'cancelled' WHERE id = %s", (fresh,))
