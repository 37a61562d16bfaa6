"""Signals in, alerts out: ingest + evaluation throughput and signal → webhook latency.

* ``signals_per_s``: batches of 1,000 signals (one per entity) POSTed by 4 clients against
  10,000 active threshold Tasks over 1,000 entities (10 per entity), measured from the first
  POST until every series head has evaluated the last batch. Baseline, same run and database:
  ``bare_insert_signals_per_s``, the same rows inserted with one unnest statement per batch and
  nothing else (no HTTP, no validation, no evaluation).
* ``signal_to_webhook_p50_ms`` / ``_p99_ms``: POST of a batch that fires one webhook Task →
  the signed POST arriving at a loopback receiver. Baseline: ``bare_http_post_p50_ms``, one
  plain POST to the same receiver. Every sample is in the percentiles: one slower than 10 s
  with its real time (waited for up to 30 s more at the end), one that never arrived as lost
  (counted in ``signal_to_webhook_lost``; a percentile falling on it is reported as null).
Bounded to about a minute (two when webhooks are late).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from bench import stack

ENTITIES = 1000
TASKS_PER_ENTITY = 10
WORKER = ["--concurrency", "2", "--prefetch-multiplier", "4", "-l", "WARNING"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SAMPLE_WAIT_S = 10.0  # how long one latency sample is waited for before the next is sent
LATE_WAIT_S = 30.0  # how long the samples still missing are waited for at the end


def _log(msg: str) -> None:
    print(f"bench_signals: {msg}", file=sys.stderr, flush=True)


def _ms(value: float) -> float | None:
    """Rounded; None for a percentile that falls on a lost sample (JSON has no infinity)."""
    return None if value == float("inf") else round(value, 2)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


class _Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                now = time.perf_counter()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    outer.arrivals[json.loads(body)["data"]["evidence"]["window"]["end"]] = now
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _seed(db: Any, ws: str, hook_url: str) -> None:
    """10 threshold templates compiled by the real pipeline, copied to 10 Tasks per entity, plus
    one webhook Task on entity LAT for the latency measurement."""
    from compiler import compile_intent
    from shared.ids import new_id
    from shared.store import tasks

    def new_task(intent: str, scope: str, delivery: dict[str, Any]) -> tasks.NewTask:
        c = compile_intent(intent, scope, delivery, None, None, endpoint_check=lambda _u: None).to_dict()
        return tasks.NewTask(new_id("task"), new_id("cpt"), new_id("cond"), new_id("act"), ws, intent, None, scope,
                             c["concept"], {**c["condition"], "trace": c["trace"]}, c["action"],
                             c["guardrails_version"], 0)

    with db.transaction() as cur:
        templates = [tasks.insert(cur, new_task(f"Tell me if E0000 price goes above {1000 + k}", "E0000",
                                                {"type": "notification"})) for k in range(TASKS_PER_ENTITY)]
        tasks.insert(cur, new_task("Tell me if LAT price goes above 100", "LAT",
                                   {"type": "webhook", "endpoint": hook_url}))
        for t in templates:
            cur.execute(
                "INSERT INTO tasks (id, workspace_id, intent, concept_id, concept_version, condition_id,"
                " condition_version, action_id, action_version, entity_scope, metric, status, guardrails_version)"
                " SELECT 'task_bench_' || %s || '_' || n, workspace_id, intent, concept_id, concept_version,"
                " condition_id, condition_version, action_id, action_version, 'E' || lpad(n::text, 4, '0'), metric,"
                " 'active', guardrails_version FROM tasks, generate_series(1, %s) AS n WHERE id = %s",
                (t.id[-8:], ENTITIES - 1, t.id))


def _batch(step: int) -> dict[str, Any]:
    ts = (T0 + timedelta(seconds=step)).isoformat()
    return {"signals": [{"entity": f"E{i:04d}", "metric": "price", "value": float(step % 500), "ts": ts}
                        for i in range(ENTITIES)]}


def _bare_insert(db: Any, batches: int) -> float:
    with db.transaction() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_bare_signals (LIKE signals INCLUDING ALL)")
    t0 = time.perf_counter()
    for step in range(batches):
        rows = _batch(step)["signals"]
        with db.transaction() as cur:
            cur.execute("INSERT INTO bench_bare_signals (workspace_id, entity, metric, ts, value)"
                        " SELECT 'x', e, m, t, v FROM unnest(%s::text[], %s::text[], %s::timestamptz[],"
                        " %s::float8[]) AS u(e, m, t, v) ON CONFLICT DO NOTHING",
                        ([r["entity"] for r in rows], [r["metric"] for r in rows], [r["ts"] for r in rows],
                         [r["value"] for r in rows]))
    return batches * ENTITIES / (time.perf_counter() - t0)


def run(seconds: float = 8.0, latency_samples: int = 60) -> dict:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    receiver = _Receiver()
    with stack.services() as env:
        db = Database(env["DATABASE_URL"], maxconn=4)
        ws = workspaces.get_or_create_workspace(db, "bench-signals").id
        key = workspaces.create_key(db, ws)
        _seed(db, ws, receiver.url)
        _log("seeded")
        bare = _bare_insert(db, 20)
        port = free_port()
        env = dict(env, WEB_CONCURRENCY="2", WARDEN_DB_POOL_MAX="8")
        celery = [str(stack.BIN / "celery"), "-A", "workers.main", "worker"]
        with stack.gunicorn("api.app:create_app()", port, env), \
                stack.process([str(stack.BIN / "warden"), "relay"], env), \
                stack.process([*celery, "-Q", "evaluation", *WORKER, "-n", "eval@%h"], env), \
                stack.process([*celery, "-Q", "delivery", *WORKER, "-n", "dlv@%h"], env):
            url = f"http://127.0.0.1:{port}/api/v1/signals"
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {key}"
            s.post(url, json=_batch(0), timeout=30).raise_for_status()  # warm up: plans cached, pools open

            def wait_evaluated(step: int, timeout: float) -> float:
                target = T0 + timedelta(seconds=step)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    row = db.fetchone("SELECT count(*) AS n FROM signal_series WHERE workspace_id = %s"
                                      " AND evaluated_ts >= %s", (ws, target))
                    if row["n"] >= ENTITIES:
                        return time.perf_counter()
                    time.sleep(0.02)
                raise RuntimeError("evaluation did not catch up")

            _log("warm batch posted")
            wait_evaluated(0, 60)
            _log("warm batch evaluated")
            step = [0]
            lock = threading.Lock()
            stop = time.monotonic() + seconds

            def client() -> int:
                sess = requests.Session()
                sess.headers["Authorization"] = f"Bearer {key}"
                sent = 0
                while time.monotonic() < stop:
                    with lock:
                        step[0] += 1
                        n = step[0]
                    sess.post(url, json=_batch(n), timeout=30).raise_for_status()
                    sent += ENTITIES
                return sent

            t0 = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                total = sum(pool.map(lambda _: client(), range(4)))
            _log(f"posted {total} signals")
            done = wait_evaluated(step[0], 120)
            rate = total / (done - t0)

            # Each sample waits up to SAMPLE_WAIT_S for its webhook before the next is sent; one
            # still missing then is waited for at the end (its real arrival time counts), and one
            # that never arrives within LATE_WAIT_S stays in the percentiles as lost (infinite).
            starts: dict[str, float] = {}
            base = []
            for i in range(latency_samples):
                ts_hi = (T0 + timedelta(days=1, seconds=2 * i + 1)).isoformat()
                ts_lo = (T0 + timedelta(days=1, seconds=2 * i)).isoformat()
                t_start = time.perf_counter()
                s.post(url, json={"signals": [{"entity": "LAT", "metric": "price", "value": 50, "ts": ts_lo},
                                              {"entity": "LAT", "metric": "price", "value": 150, "ts": ts_hi}]},
                       timeout=10).raise_for_status()
                starts[ts_hi] = t_start
                deadline = time.monotonic() + SAMPLE_WAIT_S
                while ts_hi not in receiver.arrivals and time.monotonic() < deadline:
                    time.sleep(0.001)
                t_b = time.perf_counter()
                requests.post(receiver.url, data=b"{}", timeout=5)
                base.append((time.perf_counter() - t_b) * 1000)
            late = sum(1 for ts, t in starts.items() if receiver.arrivals.get(ts, float("inf")) - t > SAMPLE_WAIT_S)
            deadline = time.monotonic() + LATE_WAIT_S
            while any(ts not in receiver.arrivals for ts in starts) and time.monotonic() < deadline:
                time.sleep(0.05)
            lat = [(receiver.arrivals[ts] - t) * 1000 if ts in receiver.arrivals else float("inf")
                   for ts, t in starts.items()]
        db.close()
    receiver.server.shutdown()
    return {
        "signals_per_s": round(rate, 1),
        "signals_tasks_active": ENTITIES * TASKS_PER_ENTITY + 1,
        "bare_insert_signals_per_s": round(bare, 1),
        "signals_ratio_to_bare_insert": round(rate / bare, 3),
        "signal_to_webhook_p50_ms": _ms(statistics.median(lat)) if lat else None,
        "signal_to_webhook_p99_ms": _ms(_pct(lat, 0.99)) if lat else None,
        "signal_to_webhook_samples": len(lat),
        "signal_to_webhook_slower_than_10s": late,
        "signal_to_webhook_lost": sum(1 for x in lat if x == float("inf")),
        "bare_http_post_p50_ms": round(statistics.median(base), 2) if base else None,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
