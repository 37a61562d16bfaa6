"""A worker SIGKILLed mid-run: the message is redelivered (acks_late + visibility timeout) to a
new worker, which resumes from the last committed step: one terminal state, no duplicated
certificate, no repeated tool side effect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from guard import verify_chain
from tests.support import TaskRuns, wait_for
from tests.workers.conftest import assert_gapless, events, model_name, submit, wait_terminal

VISIBILITY_S = 3


def _worker(settings, name: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "WARDEN_SECRET_KEY": settings.secret_key, "WARDEN_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
           "WARDEN_EXECUTIONS_TIME_LIMIT_S": "2", "WARDEN_ALLOW_PRIVATE_WEBHOOKS": "1", "WARDEN_LOG_LEVEL": "WARNING"}
    env.pop("WARDEN_SIGNING_KEY", None)
    # Solo pool: one process, so SIGKILL takes the task down with it (no pool parent to clean up).
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-Q", "executions", "--pool", "solo",
         "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_mid_run_resumes_exactly_once(stack, client, fake_llm, db, settings, celery_app, worker):
    model = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})]},
        {"calls": [("write_document", {"name": "report", "content": "All good."})], "delay_first": 60},
        {"text": "Emailed and saved."},
    ])
    celery_app.control.cancel_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_worker(settings, "victim"))
        eid = submit(client, task="Email and save the report", provider="openai", model=model,
                     permissions=["fs:read", "fs:write", "email:send"])
        # The second model call is in flight: the email step has committed.
        wait_for(lambda: len(fake_llm.requests[model]) >= 2, timeout=30)
        delivered_at = time.monotonic()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        row = db.fetchone("SELECT status FROM executions WHERE id = %s", (eid,))
        assert row["status"] == "running"
        time.sleep(max(0.0, VISIBILITY_S + 0.5 - (time.monotonic() - delivered_at)))
        procs.append(_worker(settings, "rescuer"))  # restores unacked messages older than the timeout
        e = wait_terminal(client, eid, timeout=40)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        celery_app.control.add_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)

    assert e["status"] == "succeeded" and e["result"]["output"] == "Emailed and saved."
    evs = events(client, eid)
    assert_gapless(evs)
    assert [x["type"] for x in evs].count("execution.started") == 1
    certs = client.get(f"/api/v1/executions/{eid}/certificates").json()["items"]
    assert [c["tool"] for c in certs] == ["send_email", "write_document"]
    assert verify_chain(certs, client.get("/api/v1/compliance/keys").json()) == []
    assert db.fetchone("SELECT count(*) AS n FROM email_outbox WHERE execution_id = %s", (eid,))["n"] == 1
    assert db.fetchone("SELECT count(*) AS n FROM certificates WHERE execution_id = %s", (eid,))["n"] == 2
    # The model was asked turn 1 twice (killed mid-call, then resumed), turn 0 only once.
    turns = [sum(1 for m in r["body"]["messages"] if m["role"] == "assistant") for r in fake_llm.requests[model]]
    assert turns == [0, 1, 1, 2]


def test_duplicate_message_while_running_has_no_second_effect(stack, client, fake_llm, db, celery_app):
    model = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})],
         "delay_first": 1.0},
        {"text": "done"},
    ])
    eid = submit(client, task="Email the report", provider="openai", model=model, permissions=["email:send"])
    wait_for(lambda: len(fake_llm.requests[model]) >= 1, timeout=10)
    with TaskRuns("workers.executions.run", eid) as runs:
        for _ in range(2):  # as if the broker delivered the message again while the first run is busy
            celery_app.send_task("workers.executions.run", args=[eid], queue="executions")
        e = wait_terminal(client, eid)
        assert e["status"] == "succeeded"
        runs.wait(3, timeout=30)  # the first run and both duplicates have been handled
    assert_gapless(events(client, eid))
    assert db.fetchone("SELECT count(*) AS n FROM email_outbox WHERE execution_id = %s", (eid,))["n"] == 1
    assert db.fetchone("SELECT count(*) AS n FROM certificates WHERE execution_id = %s", (eid,))["n"] == 1



def test_finished_run_leaves_its_lock_until_the_next_run_on_that_connection(stack, workspace, db, settings):
    """The lock of a run that ended stays with its connection until the next run starts there (one
    round trip less per run); a message for the finished run meanwhile stops at once, without
    the 30 s retry meant for a run another worker is driving."""
    from shared.db import Database
    from shared.store import runs
    from workers.executor import execute

    def holders(eid: str) -> int:
        return db.fetchone("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
                           " AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
                           (runs.lock_key(eid),))["n"]

    own, other = Database(settings.database_url, maxconn=1), Database(settings.database_url, maxconn=1)
    try:
        first = _queued_execution(db, workspace[0])
        assert execute(first, own, settings) == "succeeded"
        assert holders(first) == 1  # still held by own's connection
        assert execute(first, other, settings) == "not_runnable"  # taken, but the run is over: no retry
        second = _queued_execution(db, workspace[0])
        assert execute(second, own, settings) == "succeeded"
        assert (holders(first), holders(second)) == (0, 1)  # released by the second run's begin
        assert execute(first, other, settings) == "not_runnable"
    finally:
        own.close()
        other.close()


def _queued_execution(db, workspace_id: str) -> str:
    """A queued execution no worker will pick up (its outbox row marked dispatched in the same
    transaction), for driving the executor by hand."""
    from guard import load_policy, resolve_permissions
    from shared.ids import new_id
    from shared.store import executions

    policy = load_policy("default")
    res = resolve_permissions(policy, None)
    eid = new_id("exec")
    with db.transaction() as cur:
        oid = executions.insert(cur, executions.NewExecution(
            id=eid, workspace_id=workspace_id, task="List my documents", compliance_policy=policy.name,
            policy_version=policy.version, provider="local", model=None, budget_cents=100,
            requested_permissions=None, effective_permissions=res.effective, denied_permissions=res.denied,
            webhook_url=None, queued_event={}))
        cur.execute("UPDATE outbox SET dispatched_at = now() WHERE id = %s", (oid,))
    return eid
