"""Runs in flight: 1,000 submissions at once to the default stack (the Procfile's ``web``,
``relay`` and ``executions`` lines, run as ``make run`` runs them), against a model server that
answers every call after 5 s, two model calls per run (a tool call, then the answer).

* ``inflight_effective`` = completed runs × 10 s ÷ elapsed seconds: the mean number of runs in
  flight, from the first submission to the last run's end (or to the give-up bound, default
  180 s, counting what completed by then).
* ``inflight_ratio`` = that ÷ runs submitted (target ≥ 0.8).
* ``inflight_rss_mib_per_run``: the executions workers' resident memory at its peak (every
  worker process summed), over the most runs seen ``running`` at once (target ≤ 2).
* ``inflight_cpu_ms_per_run``: the workers' CPU time from the first submission to the end, over
  completed runs.
* ``inflight_cpu_ms_per_run_by_part``: the same for every part of the machine (the API, the
  executions workers, the relay, the benchmark's own load generator and model stand-in, PostgreSQL
  and Redis when the benchmark started them (embedded: their process trees), and the rest: the
  kernel's own work, whatever else runs, and the services when they are the user's (``DATABASE_URL``,
  ``REDIS_URL``)), the rest being the machine's busy time (``/proc/stat``) less the parts
  measured; ``inflight_cpu_to_last_start`` the same from the
  first submission to the last run's start, with how busy the cores were meanwhile
  (``busy_cores``): the last start waits for that CPU, and ``inflight_ratio`` with it.

The executions workers are what ``make run`` starts: the Procfile's line once per CPU core
(``WARDEN_EXECUTIONS_PROCESSES`` and ``WARDEN_EXECUTIONS_CONCURRENCY`` apply as they do to
``make run``); ``BENCH_EXECUTIONS_WORKER`` replaces that with one command line of its own.
``BENCH_INFLIGHT_RUNS``, ``BENCH_INFLIGHT_DELAY_S`` and ``BENCH_INFLIGHT_GIVE_UP_S`` change the
scale.

On a shared 2-core machine the same code measures a few hundredths apart from one run to the
next (the machine's speed drifts). So the benchmark measures ``BENCH_INFLIGHT_REPEAT`` times
(default 3), each on a fresh stack, and reports the run with the median ratio (all of its figures
from that one run), with every run's ratio (``inflight_ratio_each``) and last start beside it.

The model is the test suite's fake (``bench/fake_llm.py``) through the official OpenAI SDK.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import stack
from warden.devstack import executions_processes

SUBMITTERS = 50
TERMINAL = ("succeeded", "blocked", "error", "cancelled")


def _log(msg: str) -> None:
    print(f"bench_inflight: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def fake_model(delay: float, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.fake_llm", "--delay", str(delay)], cwd=stack.ROOT,
                            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url:
            raise RuntimeError("the fake model server did not start")
        proc.url = url  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(runs: int | None = None, delay: float | None = None, give_up_s: float | None = None,
        repeat: int | None = None) -> dict[str, Any]:
    """``repeat`` measurements (``BENCH_INFLIGHT_REPEAT``, default 3), each on a stack of its own;
    the figures are those of the one with the median ratio, with every ratio beside them."""
    repeat = max(1, repeat or int(os.environ.get("BENCH_INFLIGHT_REPEAT", "3")))
    each = []
    for i in range(repeat):
        each.append(_measure(runs, delay, give_up_s))
        _log(f"measurement {i + 1} of {repeat}: ratio {each[-1]['inflight_ratio']}")
    ratios = [r["inflight_ratio"] for r in each]
    median = sorted(each, key=lambda r: r["inflight_ratio"])[(len(each) - 1) // 2]
    return {**median, "inflight_repeat": repeat, "inflight_ratio_each": ratios,
            "inflight_last_start_s_each": [r.get("inflight_last_start_s") for r in each]}


def _measure(runs: int | None, delay: float | None, give_up_s: float | None) -> dict[str, Any]:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    runs = runs or int(os.environ.get("BENCH_INFLIGHT_RUNS", "1000"))
    delay = delay if delay is not None else float(os.environ.get("BENCH_INFLIGHT_DELAY_S", "5"))
    give_up_s = give_up_s or float(os.environ.get("BENCH_INFLIGHT_GIVE_UP_S", "180"))
    model_s = 2 * delay  # two model calls per run

    with stack.services() as env, fake_model(delay, env) as model:
        model_url = model.url
        db = Database(env["DATABASE_URL"], maxconn=2)
        ws = workspaces.get_or_create_workspace(db, "bench-inflight").id
        key = workspaces.create_key(db, ws)
        port = free_port()
        env = dict(env, PORT=str(port), OPENAI_BASE_URL=model_url + "/v1", OPENAI_API_KEY="sk-bench-not-real")
        # As `make run` starts it: the executions line once per core (WARDEN_EXECUTIONS_PROCESSES).
        line = stack.procfile_command("executions", env)
        copies = 1 if env.get("BENCH_EXECUTIONS_WORKER") else executions_processes(env)
        worker_cmd = line if copies == 1 else " & ".join(
            f"WARDEN_EXECUTIONS_NODE=executions{i} {line}" for i in range(1, copies + 1)) + " & wait"
        _log(f"executions workers: {copies} x {stack.expand(line, env)}")
        ready = f"http://127.0.0.1:{port}/healthz"
        with stack.shell(stack.procfile_command("web", env), env, ready_url=ready) as web, \
                stack.shell(stack.procfile_command("relay", env), env) as relay, \
                stack.shell(worker_cmd, env) as worker:
            parts = CpuParts({"executions": worker.pid, "api": web.pid, "relay": relay.pid, "harness": model.pid,
                              **stack.service_pids(env)})
            warm = _wait_worker_ready(port, key, db, delay)
            idle_rss, cpu0 = parts.sample(time.monotonic())
            peak_rss, peak_running = idle_rss, 0
            t0_wall, t0 = time.time(), time.monotonic()
            _log(f"T0 {t0_wall}")
            parts.samples[-1] = (t0, parts.samples[-1][1])  # the figures count from here
            deadline = t0 + give_up_s
            submitted: list[str] = []
            submit_errors: dict[str, int] = {}
            submit_s: list[float] = []

            def submit() -> None:
                submitted.extend(_post_runs(port, key, runs, submit_errors))
                submit_s.append(time.monotonic() - t0)

            sub = threading.Thread(target=submit, daemon=True)
            sub.start()
            counts: dict[str, int] = {}
            cpu1 = cpu0
            while True:
                rss, cpu1 = parts.sample(time.monotonic())
                peak_rss = max(peak_rss, rss)
                counts = {r["status"]: r["n"] for r in db.fetchall(
                    "SELECT status, count(*) AS n FROM executions WHERE workspace_id = %s AND id <> %s GROUP BY status",
                    (ws, warm))}
                peak_running = max(peak_running, counts.get("running", 0))
                done = sum(counts.get(s, 0) for s in TERMINAL)
                if not sub.is_alive() and done >= len(submitted):
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.25)
            ended = time.monotonic()
            sub.join(5)
            row = db.fetchone(
                "SELECT count(*) AS n, extract(epoch FROM max(finished_at)) AS last FROM executions"
                " WHERE workspace_id = %s AND id <> %s AND status = 'succeeded' AND finished_at <= to_timestamp(%s)",
                (ws, warm, t0_wall + give_up_s))
            completed = int(row["n"])
            # Where the time went: the first and last start after the first submission, and the
            # slowest start-to-finish (a run alone takes 2 x delay plus our own steps).
            timeline = db.fetchone(
                "SELECT extract(epoch FROM min(started_at)) - %s AS first_start,"
                " extract(epoch FROM max(started_at)) - %s AS last_start,"
                " extract(epoch FROM max(finished_at - started_at)) AS longest_run,"
                " extract(epoch FROM avg(finished_at - started_at)) AS mean_run FROM executions"
                " WHERE workspace_id = %s AND id <> %s AND status = 'succeeded'", (t0_wall, t0_wall, ws, warm))
            _log_timeline(db, ws, warm, t0_wall)
            all_done = not sub.is_alive() and sum(counts.get(s, 0) for s in TERMINAL) >= len(submitted) == runs
            elapsed = (float(row["last"]) - t0_wall) if all_done and row["last"] else min(ended - t0, give_up_s)
            llm_calls = db.fetchone("SELECT coalesce(sum((usage->>'llm_calls')::int), 0) AS n FROM executions"
                                    " WHERE workspace_id = %s AND id <> %s AND status = 'succeeded'",
                                    (ws, warm))["n"]
        db.close()
    effective = completed * model_s / elapsed if elapsed > 0 else 0.0
    return {
        "inflight_runs_submitted": len(submitted),
        "inflight_submit_errors": submit_errors,
        "inflight_model_delay_s": delay,
        "inflight_completed": completed,
        "inflight_llm_calls": int(llm_calls),
        "inflight_other_terminal": {s: counts.get(s, 0) for s in TERMINAL[1:] if counts.get(s)},
        "inflight_unfinished": max(0, len(submitted) - sum(counts.get(s, 0) for s in TERMINAL)),
        "inflight_gave_up": not all_done,
        "inflight_elapsed_s": round(elapsed, 2),
        "inflight_submit_s": round(submit_s[0], 2) if submit_s else None,
        **{f"inflight_{k}_s": round(float(v), 2) for k, v in timeline.items() if v is not None},
        "inflight_effective": round(effective, 2),
        "inflight_ratio": round(effective / runs, 4),
        "inflight_peak_running": peak_running,
        "inflight_worker_idle_rss_mib": round(idle_rss, 1),
        "inflight_worker_peak_rss_mib": round(peak_rss, 1),
        "inflight_rss_mib_per_run": round(peak_rss / peak_running, 2) if peak_running else None,
        "inflight_cpu_ms_per_run": round((cpu1 - cpu0) * 1000 / completed, 1) if completed else None,
        "inflight_cpu_ms_per_run_by_part": parts.per_run(None, completed),
        "inflight_cpu_to_last_start": parts.per_run(t0 + float(timeline["last_start"]), runs)
        if timeline.get("last_start") is not None else None,
        "inflight_worker": stack.expand(line, env),
        "inflight_executions_processes": copies,
    }


class CpuParts:
    """CPU seconds of the machine's parts over time: the process trees given by their root pids
    (``executions`` among them), the benchmark process itself (its load generator's threads,
    counted in ``harness``), and the rest of the machine's busy time (/proc/stat: PostgreSQL,
    Redis, the kernel, …). One scan of /proc per sample."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.trees = {name: stack.ProcessTree(pid) for name, pid in roots.items()}
        self.samples: list[tuple[float, dict[str, float]]] = []

    @staticmethod
    def _busy_s() -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / stack.ProcessTree.TICK  # user … steal, less idle

    def sample(self, at: float) -> tuple[float, float]:
        """Record the parts' CPU now; returns the executions workers' (resident MiB, CPU s)."""
        children = stack.ProcessTree.children()
        measured = {name: tree.sample(children) for name, tree in self.trees.items()}
        cpu = {name: m[1] for name, m in measured.items()}
        own = os.times()
        cpu["harness"] = cpu.get("harness", 0.0) + own.user + own.system
        cpu["all"] = self._busy_s()
        self.samples.append((at, cpu))
        return measured["executions"]

    def per_run(self, until: float | None, runs: int) -> dict[str, float] | None:
        """ms per run of each part from the first sample to the last one at or before ``until``
        (None: the last sample), with ``busy_cores`` over that time."""
        if len(self.samples) < 2 or not runs:
            return None
        (t_first, first) = self.samples[0]
        t_last, last = self.samples[-1]
        if until is not None:
            t_last, last = max((s for s in self.samples if s[0] <= until), key=lambda s: s[0], default=self.samples[0])
        if t_last <= t_first:
            return None
        spent = {k: last[k] - first[k] for k in first}
        rest = max(0.0, spent["all"] - sum(v for k, v in spent.items() if k != "all"))
        spent["other" if "postgres" in spent or "redis" in spent else "postgres_redis_other"] = rest
        out = {k: round(v * 1000 / runs, 2) for k, v in spent.items()}
        out["busy_cores"] = round(spent["all"] / (t_last - t_first), 2)
        out["seconds"] = round(t_last - t_first, 2)
        return out


BODY = {"task": "List my documents", "provider": "openai", "model": "bench-slow", "compliance_policy": "default",
        "budget_cents": 1000}


def _post_runs(port: int, key: str, n: int, errors: dict[str, int]) -> list[str]:
    body = json.dumps(BODY).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    local = threading.local()
    lock = threading.Lock()

    def one(_: int) -> str | None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            local.conn.request("POST", "/api/v1/tasks", body=body, headers=headers)
            resp = local.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            local.conn.close()
            del local.conn
            kind = type(exc).__name__
        else:
            if resp.status == 201:
                return str(json.loads(data)["execution_id"])
            kind = str(resp.status)
        with lock:
            errors[kind] = errors.get(kind, 0) + 1
        return None

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        return [i for i in pool.map(one, range(n)) if i]


def _log_timeline(db: Any, ws: str, warm: str, t0_wall: float) -> None:
    """Per quarter second from the first submission: runs created, started and finished (stderr)."""
    rows = db.fetchall(
        "SELECT floor((extract(epoch FROM at) - %(t0)s) * 4) AS b, count(*) FILTER (WHERE kind = 'c') AS created,"
        " count(*) FILTER (WHERE kind = 's') AS started, count(*) FILTER (WHERE kind = 'f') AS finished"
        " FROM executions, LATERAL (VALUES ('c', created_at), ('s', started_at), ('f', finished_at)) AS t(kind, at)"
        " WHERE workspace_id = %(ws)s AND id <> %(warm)s AND at IS NOT NULL GROUP BY b ORDER BY b",
        {"t0": t0_wall, "ws": ws, "warm": warm})
    for r in rows:
        _log(f"timeline {float(r['b']) / 4:6.2f}s created {int(r['created']):4d}"
             f" started {int(r['started']):4d} finished {int(r['finished']):4d}")


def _wait_worker_ready(port: int, key: str, db: Any, delay: float) -> str:
    """One run end to end before measuring (the worker is up, its imports and connections warm);
    its id, left out of the figures."""
    errors: dict[str, int] = {}
    ids = _post_runs(port, key, 1, errors)
    if not ids:
        raise RuntimeError(f"could not submit a run: {errors}")
    deadline = time.monotonic() + 60 + 2 * delay
    while time.monotonic() < deadline:
        row = db.fetchone("SELECT status, error FROM executions WHERE id = %s", (ids[0],))
        if row and row["status"] == "succeeded":
            return ids[0]
        if row and row["status"] in TERMINAL:
            raise RuntimeError(f"the warm-up run ended {row['status']}: {row['error']}")
        time.sleep(0.1)
    raise RuntimeError("the warm-up run did not finish")


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
