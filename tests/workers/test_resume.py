"""A worker SIGKILLed mid-run: the message is redelivered (acks_late + visibility timeout) to a
new worker, which resumes from the last committed step: one terminal state, no duplicated
certificate, no repeated tool side effect."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

from guard import verify_chain
from shared.store import executions as executions_store
from tests.support import wait_for
from tests.workers.conftest import (
    assert_gapless,
    events,
    model_name,
    stop_consuming_executions,
    stop_process,
    submit,
    wait_terminal,
    wait_worker_ready,
    worker_log,
    worker_process,
)

LEASE_S = 2


def _worker(settings, name: str) -> subprocess.Popen:
    # Solo pool: one process, so SIGKILL takes the task down with it (no pool parent to clean up).
    return worker_process(settings, name, pool="solo", concurrency=1, WARDEN_VISIBILITY_TIMEOUT_S="60",
                          WARDEN_EXECUTIONS_TIME_LIMIT_S="30", WARDEN_LEASE_S=str(LEASE_S))


def test_sigkill_mid_run_resumes_exactly_once(stack, client, fake_llm, db, settings, celery_app, worker):
    model = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})]},
        {"calls": [("write_document", {"name": "report", "content": "All good."})], "delay_first": 60},
        {"text": "Emailed and saved."},
    ])
    stop_consuming_executions(celery_app, worker)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_worker(settings, "victim"))
        eid = submit(client, task="Email and save the report", provider="openai", model=model,
                     permissions=["fs:read", "fs:write", "email:send"])
        # The second model call is in flight: the email step has committed.
        wait_for(lambda: len(fake_llm.requests[model]) >= 2, timeout=30)
        row = db.fetchone("SELECT status, worker FROM executions WHERE id = %s", (eid,))
        assert (row["worker"] or {}).get("pid") == procs[0].pid, f"the run is not on the victim: {row}"
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        row = db.fetchone("SELECT status FROM executions WHERE id = %s", (eid,))
        assert row["status"] == "running"
        procs.append(_worker(settings, "rescuer"))
        # What the beat does every lease/2: a run under an expired lease gets a new message, which
        # takes it over (the broker's own redelivery waits for its visibility timeout).
        stop = threading.Event()

        def sweep() -> None:
            while not stop.wait(1.0):
                executions_store.requeue_stale(db, queued_s=600, running_s=600, lease_s=LEASE_S)

        threading.Thread(target=sweep, daemon=True).start()
        try:
            e = wait_terminal(client, eid, timeout=60)
        finally:
            stop.set()
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


def test_duplicate_message_while_running_has_no_second_effect(stack, client, fake_llm, db, settings, celery_app,
                                                              worker):
    model = fake_llm.script(model_name(), [
        {"calls": [("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})],
         "delay_first": 1.0},
        {"text": "done"},
    ])
    # A worker of its own (the Procfile's gevent pool): the session's four threads may still be
    # driving runs that earlier tests left behind, which held a duplicate back past the timeout.
    # A message that finds its own run gone starts the next queued run, whatever it is (each is a
    # slot's worth of work: runs.begin): runs left queued by earlier tests are ended first.
    stop_consuming_executions(celery_app, worker)
    proc = worker_process(settings, "duplicates", concurrency=50, loglevel="INFO")
    try:
        wait_worker_ready(celery_app, proc)
        db.execute("UPDATE executions SET status = 'cancelled', finished_at = now() WHERE status = 'queued'")
        eid = submit(client, task="Email the report", provider="openai", model=model, permissions=["email:send"])
        wait_for(lambda: len(fake_llm.requests[model]) >= 1, timeout=10)
        for _ in range(2):  # as if the broker delivered the message again while the first run is busy
            celery_app.send_task("workers.executions.run", args=[eid], queue="executions")
        e = wait_terminal(client, eid)
        assert e["status"] == "succeeded"

        def handled() -> list[str]:  # each message handled logs "run message <ticket>: <outcome>"
            with open(proc.log_path, errors="replace") as f:
                return re.findall(rf"run message {eid}: (\w+)", f.read())

        # The first run and both duplicates have been handled (on a timeout: the worker's log).
        wait_for(lambda: len(handled()) >= 3, timeout=30, on_fail=lambda: worker_log(proc))
    finally:
        stop_process(proc)
        celery_app.control.add_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)
    assert_gapless(events(client, eid))
    assert db.fetchone("SELECT count(*) AS n FROM email_outbox WHERE execution_id = %s", (eid,))["n"] == 1
    assert db.fetchone("SELECT count(*) AS n FROM certificates WHERE execution_id = %s", (eid,))["n"] == 1


def test_a_run_is_taken_over_only_once_its_lease_expired_and_the_old_owner_is_fenced_out(
        stack, workspace, db, settings):
    """Ownership is a lease with a fencing token, not a held connection: while the owner's lease
    is live another message leaves the run alone (and comes back when it will have expired);
    after that it takes the run over under a new token, and a late write by the old owner (a
    process that stalled rather than died) changes nothing."""
    from shared.store import runs
    from workers.executor import execute

    eid = _queued_execution(db, workspace[0], owned_for_s=1.5)
    old_token = db.fetchone("SELECT lease_token FROM executions WHERE id = %s", (eid,))["lease_token"]

    outcome = execute(eid, db, settings)  # the message again, as the broker would redeliver it
    assert outcome.status == "retry" and 0.5 <= outcome.retry_in <= 2.5, outcome

    wait_for(lambda: db.fetchone("SELECT lease_expires_at < now() AS gone FROM executions WHERE id = %s",
                                 (eid,))["gone"], timeout=10)
    assert execute(eid, db, settings) == "succeeded"
    row = db.fetchone("SELECT status, lease_token, deliveries, worker FROM executions WHERE id = %s", (eid,))
    assert row["status"] == "succeeded" and row["lease_token"] == old_token + 1 and row["deliveries"] == 2
    assert row["worker"]["pid"] == os.getpid()

    # The old owner wakes up and writes its step under its old token: refused, nothing written.
    with db.autocommit() as cur:
        late = runs.Step(events=[("llm.completed", {"step": 9})], save={"state": {"step": 9}}, token=old_token)
        assert runs.write_step(cur, eid, late) is None
    evs = db.fetchall("SELECT type, data FROM execution_events WHERE execution_id = %s ORDER BY seq", (eid,))
    assert [e["type"] for e in evs][:2] == ["execution.queued", "execution.resumed"]
    assert evs[1]["data"]["delivery"] == 2 and evs[1]["data"]["worker"]["pid"] == os.getpid()
    assert [e["type"] for e in evs].count("execution.succeeded") == 1
    assert all(e["data"].get("worker", {}).get("pid") == os.getpid() for e in evs[1:])
    assert execute(eid, db, settings) == "nothing_to_run"  # a finished run's message: nothing, no retry


def test_a_run_whose_worker_keeps_dying_ends_worker_lost(stack, workspace, db, settings):
    """Taken max_deliveries times without ending (each owner died at the same step): the next
    takeover ends it error/worker_lost instead of running it again, and keeps what it spent."""
    from workers.executor import execute

    eid = _queued_execution(db, workspace[0], owned_for_s=0)
    db.execute("UPDATE executions SET deliveries = %s, spent_cents = 1.5 WHERE id = %s",
               (settings.max_deliveries, eid))
    assert execute(eid, db, settings) == "worker_lost"
    row = db.fetchone("SELECT status, error, spent_cents, deliveries FROM executions WHERE id = %s", (eid,))
    assert row["status"] == "error" and row["error"]["code"] == "worker_lost", row
    assert float(row["spent_cents"]) == 1.5 and row["deliveries"] == settings.max_deliveries + 1
    types = [e["type"] for e in db.fetchall("SELECT type FROM execution_events WHERE execution_id = %s ORDER BY seq",
                                            (eid,))]
    assert types == ["execution.queued", "execution.resumed", "execution.error"]


def test_a_run_given_up_on_a_database_failure_is_taken_back_at_once_under_its_own_token_only(
        stack, workspace, db, settings):
    """A process whose step met a database failure gives its run up (workers.executor.Abandoned)
    and its message comes back saying under which token: that message takes the run back at
    once, though the lease it left has 60 s to run, without counting a delivery. The same claim
    under a stale token (the run was taken over meanwhile), or naming another run, is not
    honoured: the message waits for the lease like any other. (bench/chaos.py's postgres_restart
    gives runs up through a real PostgreSQL restart.)"""
    from workers.executor import MAX_TAKE_BACKS, Abandoned, execute

    eid = _queued_execution(db, workspace[0], owned_for_s=60)
    stale = execute(eid, db, settings, Abandoned(eid, 6))  # the run now has token 7
    assert stale.status == "retry" and stale.retry_in > 50, stale
    other = execute(eid, db, settings, Abandoned("exec_someoneelse", 7))
    assert other.status == "retry" and other.retry_in > 50, other
    assert db.fetchone("SELECT lease_token FROM executions WHERE id = %s", (eid,))["lease_token"] == 7

    assert execute(eid, db, settings, Abandoned.from_message(Abandoned(eid, 7).message())) == "succeeded"
    row = db.fetchone("SELECT status, lease_token, deliveries FROM executions WHERE id = %s", (eid,))
    assert (row["status"], row["lease_token"], row["deliveries"]) == ("succeeded", 8, 1), row
    evs = db.fetchall("SELECT type, data FROM execution_events WHERE execution_id = %s ORDER BY seq", (eid,))
    assert evs[1]["type"] == "execution.resumed", evs
    assert evs[1]["data"]["after"] == "database_unavailable" and evs[1]["data"]["delivery"] == 1

    # Given up too often in a row, the message no longer says so: the run is left to its lease.
    assert Abandoned(eid, 8, MAX_TAKE_BACKS).message() is not None
    assert Abandoned(eid, 8, MAX_TAKE_BACKS + 1).message() is None


def _queued_execution(db, workspace_id: str, *, owned_for_s: float) -> str:
    """An execution already started by an owner that no longer renews its lease (it expires in
    ``owned_for_s``), with no message of its own (its outbox row marked dispatched in the same
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
        cur.execute("UPDATE executions SET status = 'running', started_at = now(), lease_token = 7, ticket = id,"
                    " deliveries = 1, lease_expires_at = now() + make_interval(secs => %s) WHERE id = %s",
                    (owned_for_s, eid))
    return eid
