"""Chaos suite: real faults on a real stack, counted from the database afterwards.

``make chaos`` (``python -m bench.chaos``) runs every case at the scale of issue 15, prints one
line per case (case, runs submitted, terminal, lost, done twice, recovery seconds) and writes
bench/results/chaos.json; tests/chaos/test_chaos.py runs the same cases at a small scale.

Lost = submitted runs not in a terminal state when the case gave up waiting. Done twice = runs
with an email sent twice, a certificate too many, two terminal or two ``execution.started``
events, or a gap in their events' seq. Recovery = seconds from the (last) fault to the moment the
case's promise was met (every run terminal, consumption resumed, ...), as the case states.

The stack (bench/chaos_stack.py) always runs on its own embedded PostgreSQL and Redis (the suite
stops, restarts and freezes them), whatever DATABASE_URL/REDIS_URL say.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from api.dispatch import GRACE_S
from bench.chaos_stack import ROOT, TERMINAL, Stack

EMAIL = ("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})


@dataclass
class Scale:
    name: str
    kill_runs: int  # half running, half reserved
    poison_others: int
    deploy_runs: int
    deploy_grace_s: float
    redis_runs: int
    redis_restarts: int
    hang_s: float
    hang_requests: int
    cancel_runs: int  # half running, half queued
    soak_runs: int
    soak_disconnects: int
    api_kill_runs: int
    pg_down_s: float
    pg_runs: int
    lease_s: float
    model_delay_s: float


FULL = Scale("full", kill_runs=200, poison_others=50, deploy_runs=300, deploy_grace_s=20, redis_runs=1000,
             redis_restarts=10, hang_s=20, hang_requests=400, cancel_runs=200, soak_runs=10000, soak_disconnects=20,
             api_kill_runs=200, pg_down_s=60, pg_runs=100, lease_s=10, model_delay_s=4)
SMALL = Scale("small", kill_runs=40, poison_others=10, deploy_runs=40, deploy_grace_s=10, redis_runs=60,
              redis_restarts=2, hang_s=5, hang_requests=60, cancel_runs=40, soak_runs=600, soak_disconnects=2,
              api_kill_runs=40, pg_down_s=8, pg_runs=20, lease_s=4, model_delay_s=2)


@dataclass
class Result:
    case: str
    submitted: int = 0
    terminal: int = 0
    lost: int = 0
    twice: int = 0
    recovery_s: float | None = None
    ok: bool = True
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, cond: bool, what: str) -> None:
        if not cond:
            self.ok = False
            self.failures.append(what)

    def tally(self, stack: Stack, ids: list[str], *, emails: int = 1, certificates: int = 1) -> None:
        self.submitted = len(ids)
        self.terminal = stack.count(ids, *TERMINAL)
        self.lost = self.submitted - self.terminal
        twice = stack.twice(ids, emails=emails, certificates=certificates)
        self.twice = sum(twice.values())
        self.figures["twice_by_kind"] = twice
        other = stack.db.fetchall("SELECT status, error->>'code' AS code, count(*) AS n FROM executions"
                                  " WHERE id = ANY(%s) AND status <> 'succeeded' GROUP BY 1, 2", (ids,))
        if other:
            self.figures["not_succeeded"] = {f"{r['status']}/{r['code']}": int(r["n"]) for r in other}
        self.check(self.lost == 0, f"{self.lost} run(s) never reached a terminal state")
        self.check(self.twice == 0, f"done twice or gaps: {twice}")

    def line(self) -> str:
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}"
        verdict = "ok" if self.ok else "FAILED: " + "; ".join(self.failures)
        return (f"{self.case:<16} submitted {self.submitted:>6}  terminal {self.terminal:>6}  lost {self.lost:>4}  "
                f"twice {self.twice:>3}  recovery {rec:>6} s  {verdict}")


def _model(stack: Stack, turns: list[dict[str, Any]]) -> str:
    return stack.fake.script(f"chaos-{uuid.uuid4().hex[:8]}", turns)


def _email_model(stack: Stack, delay: float, first_delay: float = 0.0) -> str:
    """Send one email (a certificate and an email_outbox row), then wait ``delay`` on the model."""
    return _model(stack, [{"calls": [EMAIL], "delay": first_delay, "usage": (1000, 200)},
                          {"text": "Done.", "delay": delay}])


def _sweep_until(stack: Stack, ids: list[str], timeout: float) -> float | None:
    start = time.monotonic()
    if stack.wait_terminal(ids, timeout):
        return time.monotonic() - start
    return None


# -- 1 ------------------------------------------------------------------------------------------
def case_worker_kill(stack: Stack, sc: Scale) -> Result:
    """SIGKILL an executions worker (its pool children first, then its main process) while half the
    runs wait on their model and half are reserved by it; a new worker takes over."""
    res = Result("worker_kill")
    half = sc.kill_runs // 2
    key = stack.workspace("kill")
    # Waiting on the model longer than a lease (so a takeover is needed), well within the time limit.
    model = _email_model(stack, delay=min(2 * sc.lease_s, stack.time_limit_s / 2))
    # As the Procfile runs it (prefetch 1): under gevent the consumer holds one message beyond its
    # concurrency, so the other half wait in the broker, queued.
    victim = stack.worker(concurrency=half)
    rescuer = None
    try:
        ids = stack.submit_many(key, sc.kill_runs, model=model)
        _wait(lambda: len(stack.fake.requests[model]) >= 2 * half, 120, "half the runs waiting on the model")
        time.sleep(1.0)
        running = stack.count(ids, "running")
        unacked = int(stack.redis_client().hlen("unacked"))
        res.figures.update(running_at_kill=running, unacked_at_kill=unacked)
        import psutil

        for child in psutil.Process(victim.pid).children(recursive=True):
            child.send_signal(signal.SIGKILL)
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()
        rescuer = stack.worker(concurrency=sc.kill_runs)
        done = stack.wait_terminal(ids, 3 * stack.time_limit_s + 10 * sc.lease_s)
        res.recovery_s = time.monotonic() - killed if done else None
        res.tally(stack, ids)
        res.figures["resumed"] = stack.resumed(ids)
        res.check(running >= half * 0.9, f"only {running} of {half} running at the kill")
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
        res.check(stack.emails_sent(ids) == len(ids), "a run's email is missing")
    finally:
        victim.stop(5)
        if rescuer:
            rescuer.stop(20)
    return res


# -- 2 ------------------------------------------------------------------------------------------
def case_poison(stack: Stack, sc: Scale) -> Result:
    """A run whose model answer kills its worker at the same step every time; a supervisor restarts
    the worker (as systemd or an orchestrator would). The run is taken at most WARDEN_MAX_DELIVERIES
    (3) times, then ends error/worker_lost with what it spent; the others all succeed."""
    res = Result("poison_run")
    key = stack.workspace("poison")
    poison = _model(stack, [{"calls": [EMAIL], "usage": (1000, 200)}, {"kill": "peer"}])
    good = _email_model(stack, delay=0.2)
    workers = [stack.worker(concurrency=50)]
    stop = threading.Event()

    def supervise() -> None:  # restart the worker when it dies
        while not stop.wait(0.2):
            if not workers[-1].alive():
                workers[-1].wait(1)
                workers.append(stack.worker(concurrency=50))

    sup = threading.Thread(target=supervise, daemon=True)
    sup.start()
    try:
        [bad] = stack.submit_many(key, 1, model=poison)
        start = time.monotonic()
        others = stack.submit_many(key, sc.poison_others, model=good)
        # Keep submitting others while the poison run is being retried: the worker keeps serving.
        while stack.count([bad], *TERMINAL) == 0 and time.monotonic() - start < 10 * sc.lease_s + 60:
            others += stack.submit_many(key, 2, model=good)
            time.sleep(1.0)
        done = stack.wait_terminal([bad, *others], 10 * sc.lease_s + 60)
        res.recovery_s = time.monotonic() - start if done else None
        res.tally(stack, [bad, *others])
        row = stack.db.fetchone("SELECT status, error, spent_cents FROM executions WHERE id = %s", (bad,))
        kills = len(stack.fake.killed[poison])
        res.figures.update(poison_status=row["status"], poison_error=(row["error"] or {}).get("code"),
                           poison_spent_cents=float(row["spent_cents"] or 0), worker_deaths=kills,
                           worker_processes=len(workers))
        res.check(row["status"] == "error" and (row["error"] or {}).get("code") == "worker_lost",
                  f"poison run ended {row['status']} {row['error']}")
        res.check(1 <= kills <= 3, f"the poison step ran {kills} times (at most 3)")
        res.check(float(row["spent_cents"] or 0) > 0, "the poison run's spend was not kept")
        hurt = stack.db.fetchall(
            "SELECT e.status, e.error->>'code' AS code, (SELECT count(*) FROM execution_events v WHERE"
            " v.execution_id = e.id AND v.type = 'execution.resumed') AS resumed FROM executions e"
            " WHERE e.id = ANY(%s) AND e.status <> 'succeeded'", (others,))
        res.figures["others_not_succeeded"] = [dict(r) for r in hurt]
        res.check(not hurt, f"{len(hurt)} other run(s) did not succeed: {[dict(r) for r in hurt][:3]}")
    finally:
        stop.set()
        sup.join(5)
        for w in workers:
            w.stop(10)
    return res


# -- 3 ------------------------------------------------------------------------------------------
def case_rolling_deploy(stack: Stack, sc: Scale) -> Result:
    """SIGTERM every executions worker under load and start new ones (a deploy): a worker finishes
    its runs within the grace period (Procfile / docker-compose stop_grace_period), what it could
    not finish is taken over; 0 lost, 0 twice."""
    res = Result("rolling_deploy")
    key = stack.workspace("deploy")
    model = _email_model(stack, delay=sc.model_delay_s)
    # A tenth wait on their model longer than the grace period: their worker is killed under them.
    slow = _email_model(stack, delay=sc.deploy_grace_s + 4)
    old = [stack.worker(concurrency=sc.deploy_runs // 4) for _ in range(2)]
    new: list[Any] = []
    try:
        long_ids = stack.submit_many(key, max(1, sc.deploy_runs // 10), model=slow)
        _wait(lambda: stack.count(long_ids, "running") == len(long_ids), 120, "the long runs running")
        ids = long_ids + stack.submit_many(key, sc.deploy_runs - len(long_ids), model=model)
        _wait(lambda: stack.count(ids, "running") >= sc.deploy_runs // 4, 120, "runs running")
        new = [stack.worker(concurrency=sc.deploy_runs // 4) for _ in range(2)]
        deployed = time.monotonic()
        for w in old:
            w.signal(signal.SIGTERM)
        exited = []
        for w in old:
            left = sc.deploy_grace_s - (time.monotonic() - deployed)
            clean = w.wait(max(0.1, left))
            if not clean:  # past the grace period the orchestrator kills it
                w.kill_group()
                w.wait(10)
            exited.append(clean)
        res.figures["old_workers_exited_within_grace"] = sum(exited)
        done = stack.wait_terminal(ids, 3 * stack.time_limit_s + 10 * sc.lease_s)
        res.recovery_s = time.monotonic() - deployed if done else None
        res.tally(stack, ids)
        res.figures["resumed"] = stack.resumed(ids)
        res.figures["long_runs_resumed"] = stack.resumed(long_ids)
        res.check(sum(exited) < len(old) or stack.resumed(long_ids) == 0,
                  "a worker exited cleanly although a run outlasted the grace period")
        res.check(stack.resumed(long_ids) == len(long_ids), "a run past the grace period was not taken over")
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
        res.check(stack.emails_sent(ids) == len(ids), "a run's email is missing")
    finally:
        for w in old + new:
            w.stop(20)
    return res


# -- 4 ------------------------------------------------------------------------------------------
def case_redis_restarts(stack: Stack, sc: Scale) -> Result:
    """Redis stopped and started N times while runs are queued: consumption resumes within 30 s
    each time; all complete, none twice."""
    res = Result("redis_restarts")
    key = stack.workspace("redis")
    model = _email_model(stack, delay=0.5)
    w = stack.worker(concurrency=20)
    resumes: list[float] = []
    try:
        ids = stack.submit_many(key, sc.redis_runs, model=model)
        _wait(lambda: stack.count(ids, *TERMINAL) >= 5, 60, "first runs done")
        for _ in range(sc.redis_restarts):
            if stack.count(ids, "queued") == 0:
                break
            stack.redis_restart()
            back = time.monotonic()
            before = _started(stack, ids)
            try:
                _wait(lambda before=before: _started(stack, ids) > before, 30, "a run started after the restart")
                resumes.append(time.monotonic() - back)
            except TimeoutError:
                resumes.append(float("inf"))
            time.sleep(1.0)
        last = time.monotonic()
        done = stack.wait_terminal(ids, 2 * stack.time_limit_s + sc.redis_runs / 5 + 60)
        res.recovery_s = time.monotonic() - last if done else None
        res.tally(stack, ids)
        res.figures.update(restarts=len(resumes), resume_s=[round(x, 1) for x in resumes],
                           worker_alive=w.alive())
        res.check(len(resumes) > 0 and max(resumes) <= 30, f"consumption resumed after {resumes} s (≤ 30)")
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
        if not w.alive():
            res.check(False, f"the worker died: {w.tail(600)}")
    finally:
        w.stop(20)
    return res


def _started(stack: Stack, ids: list[str]) -> int:
    return int(stack.db.fetchone("SELECT count(*) AS n FROM executions WHERE id = ANY(%s) AND status <> 'queued'"
                                 " AND NOT (status = 'cancelled' AND started_at IS NULL)", (ids,))["n"])


def case_redis_hung(stack: Stack, sc: Scale) -> Result:
    """Redis frozen (SIGSTOP) while clients keep submitting: every submission answers 201 (the
    outbox), p99 under 500 ms; after SIGCONT every run completes."""
    res = Result("redis_hung")
    key = stack.workspace("hung")
    model = _email_model(stack, delay=0.2)
    w = stack.worker(concurrency=50)
    try:
        warm = stack.submit_many(key, 5, model=model)
        stack.wait_terminal(warm, 60)
        codes: list[int] = []
        lat: list[float] = []
        ids: list[str] = []
        lock = threading.Lock()
        stack.redis_pause()
        paused = time.monotonic()
        deadline = paused + sc.hang_s
        per_s = sc.hang_requests / sc.hang_s

        def one(i: int) -> None:
            t = time.monotonic()
            try:
                r = requests.post(f"{stack.url}/api/v1/tasks", json={"task": f"Hung #{i}", "provider": "openai",
                                                                     "model": model, "permissions": ["email:send"]},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=30)
                code = r.status_code
                eid = r.json().get("execution_id") if code == 201 else None
            except requests.RequestException:
                code, eid = 0, None
            with lock:
                codes.append(code)
                lat.append(time.monotonic() - t)
                if eid:
                    ids.append(eid)

        with ThreadPoolExecutor(16) as pool:
            i = 0
            while time.monotonic() < deadline:
                pool.submit(one, i)
                i += 1
                time.sleep(1 / per_s)
            stack.redis_resume()
            resumed = time.monotonic()
        done = stack.wait_terminal(ids, 2 * stack.time_limit_s + 60)
        res.recovery_s = time.monotonic() - resumed if done else None
        res.tally(stack, [*ids])
        res.submitted = len(codes)
        res.lost += len(codes) - len(ids)
        lat.sort()
        p99 = lat[int(0.99 * (len(lat) - 1))] if lat else 0.0
        res.figures.update(requests=len(codes), created=len(ids), p50_ms=round(1000 * statistics.median(lat), 1),
                           p99_ms=round(1000 * p99, 1), max_ms=round(1000 * lat[-1], 1),
                           other_codes={str(c): codes.count(c) for c in set(codes) if c != 201})
        res.check(len(ids) == len(codes), f"{len(codes) - len(ids)} submission(s) not answered 201 while Redis hung")
        res.check(p99 < 0.5, f"p99 {1000 * p99:.0f} ms while Redis hung (< 500)")
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
    finally:
        stack.redis_resume()
        w.stop(20)
    return res


def _postgres_outage(stack: Stack, res: Result, down_s: float) -> float:
    """Stop PostgreSQL (a fast shutdown: every connection dropped) for ``down_s`` and start it
    again on its address; the monotonic time it was back."""
    from shared.db import Database

    stack.pg.stop()
    time.sleep(down_s)
    url = stack.pg.start("warden_chaos")
    back = time.monotonic()
    stack.db.close()  # this runner's own pooled connections died with the server
    stack.db = Database(stack.database_url, maxconn=8)
    res.check(url == stack.database_url, f"PostgreSQL came back at another address: {url}")
    return back


# -- 5 (worker side) ------------------------------------------------------------------------------
def case_postgres_down(stack: Stack, sc: Scale) -> Result:
    """PostgreSQL stopped (a fast shutdown: every connection dropped) while runs wait on their
    model and more are queued, started again after the outage: every run submitted before it
    reaches a terminal state within 60 s of recovery, with gapless events, none twice."""
    res = Result("postgres_down")
    key = stack.workspace("pg")
    model = _email_model(stack, delay=sc.model_delay_s)
    w = stack.worker(concurrency=max(10, sc.pg_runs // 2))
    try:
        ids = stack.submit_many(key, sc.pg_runs, model=model)
        _wait(lambda: stack.count(ids, "running") >= sc.pg_runs // 4, 60, "runs running")
        res.figures.update(running_at_outage=stack.count(ids, "running"), queued_at_outage=stack.count(ids, "queued"))
        back = _postgres_outage(stack, res, sc.pg_down_s)
        done = stack.wait_terminal(ids, 60)
        res.recovery_s = time.monotonic() - back if done else None
        res.check(done, "not every run was terminal within 60 s of recovery")
        if not done:
            stack.wait_terminal(ids, 2 * stack.time_limit_s + 10 * sc.lease_s)
        res.tally(stack, ids)
        res.figures["statuses"] = {st: stack.count(ids, st) for st in TERMINAL if stack.count(ids, st)}
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
        res.check(w.alive(), f"the worker died: {w.tail(600)}")
    finally:
        w.stop(20)
    return res


def case_postgres_restart(stack: Stack, sc: Scale) -> Result:
    """PostgreSQL restarted (a fast shutdown, a few seconds down, started again) while runs wait
    on their model, their answers arriving while it is down, on a worker whose lease is long
    (RESTART_LEASE_S). A run whose step met the outage is given up by its process and taken back
    by its own message as soon as the database answers (``execution.resumed`` with ``after:
    database_unavailable``), not after its lease: every run terminal within RESTART_LEASE_S / 3
    of the restart (had they waited out their leases, they would take longer), succeeded, its
    email sent once, none counted as a lost worker (``deliveries`` stays 1)."""
    res = Result("postgres_restart")
    key = stack.workspace("pgr")
    model = _email_model(stack, delay=sc.model_delay_s)
    w = stack.worker(concurrency=max(10, sc.pg_runs), WARDEN_LEASE_S=str(RESTART_LEASE_S))
    try:
        ids = stack.submit_many(key, sc.pg_runs, model=model)
        # Every run has sent its email (a committed step) and waits on its model's second answer.
        _wait(lambda: stack.emails_sent(ids) == len(ids), 60, "every run's email step committed")
        back = _postgres_outage(stack, res, sc.model_delay_s + 1)  # the answers arrive while it is down
        done = stack.wait_terminal(ids, RESTART_LEASE_S / 3)
        res.recovery_s = time.monotonic() - back if done else None
        res.check(done, f"not every run was terminal within {RESTART_LEASE_S / 3:.0f} s of the restart")
        if not done:
            stack.wait_terminal(ids, 2 * RESTART_LEASE_S)
        res.tally(stack, ids)
        recovered = int(stack.db.fetchone(
            "SELECT count(DISTINCT execution_id) AS n FROM execution_events WHERE execution_id = ANY(%s)"
            " AND type = 'execution.resumed' AND data->>'after' = 'database_unavailable'", (ids,))["n"])
        deliveries = int(stack.db.fetchone("SELECT max(deliveries) AS n FROM executions WHERE id = ANY(%s)",
                                           (ids,))["n"])
        res.figures.update(recovered_runs=recovered, max_deliveries=deliveries)
        res.check(recovered > 0, "no run's step met the outage: the case tested nothing")
        res.check(deliveries == 1, f"a run was counted as taken {deliveries} times")
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
        res.check(w.alive(), f"the worker died: {w.tail(600)}")
        # The outage is in the worker's log once, with its end, not once a second.
        log = w.tail(10**7)
        away = log.count("lease monitor: cannot reach the database")
        res.figures["monitor_outage_lines"] = away
        res.check(away == 1 and "lease monitor: the database answers again" in log,
                  f"the lease monitor reported the outage {away} times (or not its end)")
    finally:
        w.stop(20)
    return res


#: The lease of postgres_restart's worker: long, so that a run left to lease expiry would show.
RESTART_LEASE_S = 60.0


# -- 6 ------------------------------------------------------------------------------------------
def case_cancel(stack: Stack, sc: Scale) -> Result:
    """Cancel runs that are queued and runs that wait on their model, then restart every worker:
    0 cancelled runs start or call a tool after their cancel was acknowledged."""
    res = Result("cancel")
    half = sc.cancel_runs // 2
    key = stack.workspace("cancel")
    # The first answer (an email) comes only after a while: a running run is cancelled before its tool.
    model = _email_model(stack, delay=0.2, first_delay=3 * sc.model_delay_s)
    w = stack.worker(concurrency=half)
    w2 = None
    try:
        ids = stack.submit_many(key, sc.cancel_runs, model=model)
        _wait(lambda: len(stack.fake.requests[model]) >= half, 120, "half the runs waiting on the model")
        running = stack.count(ids, "running")
        queued = stack.count(ids, "queued")
        res.figures.update(running_at_cancel=running, queued_at_cancel=queued)
        t0 = time.monotonic()
        sess = requests.Session()
        cancelled_at = {}
        for eid in ids:
            r = sess.post(f"{stack.url}/api/v1/executions/{eid}/cancel", headers={"Authorization": f"Bearer {key}"},
                          timeout=30)
            res.check(r.status_code in (200, 202), f"cancel answered {r.status_code}")
            cancelled_at[eid] = time.time()
        try:
            _wait(lambda: stack.count(ids, "cancelled") == len(ids), 30, "every run cancelled")
            res.figures["all_cancelled_s"] = round(time.monotonic() - t0, 2)
        except TimeoutError:
            left = stack.db.fetchall("SELECT status, cancel_requested, lease_expires_at > now() AS live, count(*) AS n"
                                     " FROM executions WHERE id = ANY(%s) AND status <> 'cancelled'"
                                     " GROUP BY 1, 2, 3", (ids,))
            res.check(False, f"not every run cancelled within 30 s: {[dict(r) for r in left]}")
        # Restart every worker; then wait for a positive sign the new one consumes (a fresh run done).
        w.stop(30)
        w2 = stack.worker(concurrency=half)
        probe = stack.submit_many(key, 1, model=_email_model(stack, delay=0))
        done = stack.wait_terminal(probe, 60)
        res.check(done, "the restarted worker ran nothing")
        res.recovery_s = time.monotonic() - t0
        res.tally(stack, ids)
        after = stack.db.fetchone(
            """SELECT count(DISTINCT ev.execution_id) AS n FROM execution_events ev
                 JOIN execution_events c ON c.execution_id = ev.execution_id AND c.type = 'execution.cancelled'
                WHERE ev.execution_id = ANY(%s) AND ev.seq > c.seq""", (ids,))["n"]
        # Tool calls and emails after each run's cancel was acknowledged. (A run whose model answered
        # before its cancel reached the server called its tool legitimately: on a loaded machine the
        # first runs' answers can come while later runs are still being cancelled.)
        tool_rows = stack.db.fetchall("SELECT execution_id, EXTRACT(EPOCH FROM at)::float8 AS t FROM execution_events"
                                      " WHERE execution_id = ANY(%s) AND type LIKE 'tool.%%'", (ids,))
        tools = sum(1 for r in tool_rows if r["t"] > cancelled_at[r["execution_id"]])
        email_rows = stack.db.fetchall("SELECT execution_id, EXTRACT(EPOCH FROM created_at)::float8 AS t"
                                       " FROM email_outbox WHERE execution_id = ANY(%s)", (ids,))
        emails = sum(1 for r in email_rows if r["t"] > cancelled_at[r["execution_id"]])
        res.figures.update(tool_events_before_cancel=len(tool_rows) - tools,
                           emails_before_cancel=len(email_rows) - emails)
        started_queued = stack.db.fetchone(
            "SELECT count(*) AS n FROM executions WHERE id = ANY(%s) AND started_at IS NOT NULL"
            " AND error->>'message' = 'Cancelled before it started'", (ids,))["n"]
        res.figures.update(events_after_cancel=int(after), tool_events=int(tools), emails=emails,
                           queued_cancelled_then_started=int(started_queued))
        res.check(after == 0, f"{after} cancelled run(s) wrote events after their cancel")
        res.check(tools == 0 and emails == 0, f"cancelled runs called tools: {tools} tool events, {emails} emails")
        res.check(started_queued == 0, f"{started_queued} queued run(s) started after their cancel")
        res.check(stack.count(probe, "succeeded") == 1, "the probe run did not succeed")
    finally:
        w.stop(10)
        if w2:
            w2.stop(20)
    return res


# -- 8 ------------------------------------------------------------------------------------------
def case_soak(stack: Stack, sc: Scale) -> Result:
    """Many short runs with broker disconnects (Redis CLIENT KILL of the worker's connections):
    worker RSS after warm-up grows under 10 %."""
    res = Result("soak")
    key = stack.workspace("soak")
    model = _email_model(stack, delay=0.05)
    w = stack.worker(concurrency=100)
    ids: list[str] = []
    try:
        warm_n = max(200, sc.soak_runs // 10)
        ids += stack.submit_many(key, warm_n, model=model)
        stack.wait_terminal(ids, 300)
        time.sleep(1.0)
        rss0 = w.rss()
        batches = max(1, sc.soak_disconnects)
        per = (sc.soak_runs - warm_n) // batches
        start = time.monotonic()
        r = stack.redis_client()
        kills = 0
        for _ in range(batches):
            batch = stack.submit_many(key, per, model=model)
            ids += batch
            time.sleep(0.5)
            kills += int(r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
            stack.wait_terminal(batch, 120 + per / 10)
        done = stack.wait_terminal(ids, 120)
        res.recovery_s = time.monotonic() - start if done else None
        time.sleep(1.0)
        rss1 = w.rss()
        res.tally(stack, ids)
        growth = (rss1 - rss0) / rss0
        res.figures.update(rss_after_warmup_mib=round(rss0 / 2**20, 1), rss_end_mib=round(rss1 / 2**20, 1),
                           rss_growth_pct=round(100 * growth, 1), disconnects=batches, connections_killed=kills,
                           worker_alive=w.alive())
        res.check(growth < 0.10, f"worker RSS grew {100 * growth:.1f} % after warm-up (< 10 %)")
        res.check(w.alive(), f"the worker died: {w.tail(600)}")
    finally:
        w.stop(20)
    return res


# -- 9 ------------------------------------------------------------------------------------------
def case_api_kill(stack: Stack, sc: Scale) -> Result:
    """SIGKILL the API processes (gunicorn master and workers) while submissions are in flight, and
    the relay too; start both again. Each submission carries an Idempotency-Key: every one answered
    201 runs exactly once; one that failed on the wire (no answer) is retried with its key and then
    runs exactly once; one answered with an error status runs never."""
    res = Result("api_kill")
    key = stack.workspace("apikill")
    model = _email_model(stack, delay=0.2)
    w = stack.worker(concurrency=100)
    marks = [f"apikill-{uuid.uuid4().hex[:10]}" for _ in range(sc.api_kill_runs)]
    outcome: dict[str, Any] = {}
    lock = threading.Lock()

    def one(mark: str) -> None:
        try:
            r = requests.post(f"{stack.url}/api/v1/tasks", json={"task": mark, "provider": "openai", "model": model,
                                                                 "permissions": ["email:send"]},
                              headers={"Authorization": f"Bearer {key}", "Idempotency-Key": mark}, timeout=30)
            val: Any = r.status_code
        except requests.RequestException:
            val = "wire"
        with lock:
            outcome[mark] = val

    try:
        import psutil

        half, held = threading.Event(), threading.Event()

        def submit_all(pool: ThreadPoolExecutor) -> None:
            # The second half is sent once the outbox is held: those requests wait on their
            # INSERTs, so the hold has rows to catch the relay with when it lets them through.
            for i, mark in enumerate(marks):
                if i == len(marks) // 2:
                    half.set()
                    held.wait(60)
                pool.submit(one, mark)
                time.sleep(0.005)

        with ThreadPoolExecutor(32) as pool:
            submitter = threading.Thread(target=submit_all, args=(pool,), daemon=True)
            submitter.start()
            half.wait(60)
            # The relay is killed between publishing a batch and recording it: a SHARE lock on
            # the outbox lets its claim (FOR UPDATE) and its publish through and holds its
            # UPDATE; once it waits there (seen in pg_stat_activity), the kill.
            blocker, caught = _hold_outbox_records(stack, timeout=GRACE_WAIT_S, held=held)
            api = psutil.Process(stack.api.pid)
            for p in [*api.children(recursive=True), api]:
                p.send_signal(signal.SIGKILL)
            stack.relay.signal(signal.SIGKILL)
            killed = time.monotonic()
            blocker.rollback()
            blocker.close()
            res.figures["relay_killed_after_publish_before_record"] = caught
            submitter.join(60)
        stack.api.wait(5)
        stack.relay.wait(5)
        from bench.chaos_stack import BIN

        stack.api = stack.start_api()
        stack.relay = stack.spawn("relay", [str(BIN / "warden"), "relay"])
        wire = [m for m, v in outcome.items() if v == "wire"]
        for mark in wire:  # the client's retry, with the same key
            one(mark)
        ok_marks = [m for m, v in outcome.items() if v == 201]
        err_marks = [m for m, v in outcome.items() if v != 201]
        rows = stack.db.fetchall("SELECT id, task FROM executions WHERE task = ANY(%s)", (marks,))
        per: dict[str, list[str]] = {}
        for row in rows:
            per.setdefault(row["task"], []).append(row["id"])
        ids = [row["id"] for row in rows]
        done = stack.wait_terminal(ids, 2 * stack.time_limit_s + 60)
        res.recovery_s = time.monotonic() - killed if done else None
        res.tally(stack, ids)
        res.submitted = len(marks)
        res.lost += sum(1 for m in ok_marks if m not in per)
        not_once = [m for m in ok_marks if len(per.get(m, [])) != 1]
        ran_on_error = [m for m in err_marks if per.get(m)]
        res.figures.update(answered_201_first_try=len(marks) - len(wire) - len(err_marks), failed_on_wire=len(wire),
                           error_status={str(v): sum(1 for x in outcome.values() if x == v)
                                         for v in set(outcome.values()) if v != 201},
                           executions=len(ids))
        res.check(bool(res.figures["relay_killed_after_publish_before_record"]),
                  "the relay was not caught between a publish and its record")
        res.check(not not_once, f"{len(not_once)} submission(s) answered 201 did not run exactly once")
        res.check(not ran_on_error, f"{len(ran_on_error)} submission(s) answered with an error ran")
        res.check(stack.count(ids, "succeeded") == len(ids), "not every run succeeded")
    finally:
        w.stop(20)
    return res


#: How long a hold waits for the relay: rows the API process published itself (``publish_after``,
#: api/dispatch.GRACE_S ahead) go to the relay when that passes.
GRACE_WAIT_S = GRACE_S + 3.0


def _hold_outbox_records(stack: Stack, timeout: float, held: threading.Event | None = None,
                         attempts: int = 4) -> tuple[Any, int]:
    """Take a SHARE lock on the outbox (in a transaction the caller rolls back) and wait until a
    relay has published a batch and waits to record it: (the connection, how many relay
    connections wait so; they are named ``warden-relay``). A SHARE lock lets SELECT ... FOR UPDATE
    through and holds UPDATE (and the API's INSERTs, which then wait too: requests in flight at
    the kill die uncommitted). ``held`` is set once the first lock is held.

    The relay can only be caught if a row is pending while the lock is held (nothing can add one
    then): with none, or none claimed within ``timeout``, the lock is let go and taken again at
    once. The INSERTs it held commit in between, the new lock request waits for them, and the
    relay's UPDATE for their rows queues behind it (PostgreSQL grants locks in queue order). Rows
    the API process publishes itself are left to it for api/dispatch.GRACE_S, then the relay takes
    them: ``timeout`` covers that."""
    import psycopg2

    conn = psycopg2.connect(stack.database_url)
    for attempt in range(attempts):
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE outbox IN SHARE MODE")
            cur.execute("SELECT count(*) FROM outbox WHERE dispatched_at IS NULL")
            pending = int(cur.fetchone()[0])
        if attempt == 0 and held is not None:
            held.set()
        deadline = time.monotonic() + (timeout if pending else 0.5)
        while time.monotonic() < deadline:
            row = stack.db.fetchone("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                    " AND application_name = 'warden-relay'"
                                    " AND query LIKE 'UPDATE outbox SET dispatched_at%%'")
            if int(row["n"]):
                return conn, int(row["n"])
            time.sleep(0.05)
        conn.rollback()
    return conn, 0


CASES: dict[str, Callable[[Stack, Scale], Result]] = {
    "worker_kill": case_worker_kill,
    "poison_run": case_poison,
    "rolling_deploy": case_rolling_deploy,
    "cancel": case_cancel,
    "api_kill": case_api_kill,
    "soak": case_soak,
    "redis_hung": case_redis_hung,
    "redis_restarts": case_redis_restarts,
    # Last: the API's pooled connections may not survive the outage (issue 15 item 5, API side).
    "postgres_down": case_postgres_down,
    "postgres_restart": case_postgres_restart,
}


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def run(scale: Scale, only: list[str] | None = None, out: Path | None = None) -> list[Result]:
    results: list[Result] = []
    stack = Stack(lease_s=scale.lease_s, time_limit_s=30).start()
    try:
        for name, fn in CASES.items():
            if only and name not in only:
                continue
            t = time.monotonic()
            try:
                r = fn(stack, scale)
            except Exception as exc:  # a case that could not complete is a failed case, with why
                r = Result(name, ok=False, failures=[f"{type(exc).__name__}: {exc}"])
            r.figures["seconds"] = round(time.monotonic() - t, 1)
            results.append(r)
            print(r.line(), flush=True)
    finally:
        stack.stop()
    if out is not None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cases = [{**asdict(r), "at": at} for r in results]
        if only and out.exists():  # a partial run replaces its cases' entries of the same scale
            previous = json.loads(out.read_text())
            if previous.get("scale", {}).get("name") == scale.name:
                mine = {c["case"] for c in cases}
                kept = [c for c in previous.get("cases", []) if c["case"] not in mine]
                cases = sorted(kept + cases, key=lambda c: list(CASES).index(c["case"]) if c["case"] in CASES else 99)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"scale": asdict(scale), "at": at, "cases": cases}, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("full", "small"), default="full")
    ap.add_argument("--only", nargs="*", choices=list(CASES), help="run only these cases")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.json"))
    ap.add_argument("--markdown", action="store_true", help="print the table of --out as Markdown; run nothing")
    a = ap.parse_args(argv)
    if a.markdown:
        for c in json.loads(Path(a.out).read_text())["cases"]:
            rec = "-" if c["recovery_s"] is None else f"{c['recovery_s']:.1f}"
            met = "yes" if c["ok"] else "no: " + "; ".join(c["failures"])
            print(f"| {c['case']} | {c['submitted']:,} | {c['terminal']:,} | {c['lost']} | {c['twice']} | {rec} "
                  f"| {met} |")
        return 0
    os.environ.setdefault("WARDEN_LOG_LEVEL", "WARNING")
    results = run(FULL if a.scale == "full" else SMALL, a.only, Path(a.out))
    for r in results:
        if r.figures:
            print(f"  {r.case}: {json.dumps(r.figures)}")
    if a.only:
        print(f"(these cases replaced theirs in {a.out})")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
