"""Dry-run compile latency at 50 concurrent clients through the ``compiler`` queue: gunicorn API →
Celery (Redis broker) → a compiler worker process → reply list → API, against the bare Flask
insert+enqueue baseline (``bench/baseline_app.py``) under the same gunicorn settings.

Both servers run at once and are loaded in turn (baseline, ours, baseline, ours, …), so drift in a
shared machine's load hits both alike. Reported p50/p99 are the medians over segments; the ratio
is the median of the per-round p99 ratios (five rounds: with three, one bad segment of a shared
machine moved the median). Bounded to about 45 s. The load generator counts non-2xx answers,
connection errors and timeouts as errors on both sides (``dryrun_*errors``) and keeps them in the
latency percentiles; ``dryrun_rps`` counts 2xx answers only.

The compiler worker runs as the Procfile runs it (prefork); ``BENCH_COMPILER_POOL_ARGS="--pool
solo"`` measures another pool (a compile is ~0.1 ms of CPU, so the pool's own overhead dominates).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import requests

from bench import stack

BODY = {"intent": "Alert me when AAPL price rises significantly", "entity_scope": "AAPL",
        "delivery": {"type": "notification"}, "dry_run": True}
ROUNDS = 5
SEGMENT_S = 3.0
WARMUP_S = 0.5


def _wait_compiles(url: str, key: str, timeout: float = 30.0) -> None:
    """Until the worker answers (its first task also warms its imports)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=15)
            if r.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("the compiler worker did not answer a dry run within 30 s")


def _kinds(segs: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for seg in segs:
        for kind, n in seg["error_kinds"].items():
            out[kind] = out.get(kind, 0) + n
    return out


def run(clients: int = 50) -> dict:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    with stack.services() as env:
        db = Database(env["DATABASE_URL"], maxconn=2)
        db.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id text PRIMARY KEY, body jsonb NOT NULL,"
                   " created_at timestamptz NOT NULL DEFAULT now())")
        ws = workspaces.get_or_create_workspace(db, "bench-dryrun")
        key = workspaces.create_key(db, ws.id)
        db.close()
        port_a, port_b = free_port(), free_port()
        concurrency = str(max(2, os.cpu_count() or 2))
        worker_cmd = [str(stack.BIN / "celery"), "-A", "workers.main", "worker", "-Q", "compiler",
                      "-n", "bench-compiler@%h", "--concurrency", concurrency, "--prefetch-multiplier", "8",
                      *os.environ.get("BENCH_COMPILER_POOL_ARGS", "").split(),
                      "-l", "warning"]
        ours_url, base_url = f"http://127.0.0.1:{port_a}/api/v1/tasks", f"http://127.0.0.1:{port_b}/baseline"
        ours, base = [], []
        with stack.process(worker_cmd, env), stack.gunicorn("api.app:create_app()", port_a, env), \
                stack.gunicorn("bench.baseline_app:create_app()", port_b, env):
            stack.wait_port(port_b)
            _wait_compiles(ours_url, key)
            for _ in range(ROUNDS):
                base.append(stack.loadgen(base_url, json.dumps({"task": "x"}), [], clients=clients,
                                          seconds=SEGMENT_S, warmup=WARMUP_S))
                ours.append(stack.loadgen(ours_url, json.dumps(BODY), [f"Authorization: Bearer {key}"],
                                          clients=clients, seconds=SEGMENT_S, warmup=WARMUP_S))
    statuses: dict[str, int] = {}
    for seg in ours:
        for code, n in seg["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    ratios = [o["p99_ms"] / b["p99_ms"] for o, b in zip(ours, base, strict=True) if b["p99_ms"]]
    return {
        "dryrun_rps": round(statistics.median(s["rps"] for s in ours), 1),
        "dryrun_p50_ms": round(statistics.median(s["p50_ms"] for s in ours), 2),
        "dryrun_p99_ms": round(statistics.median(s["p99_ms"] for s in ours), 2),
        "dryrun_errors": sum(s["errors"] for s in ours),
        "dryrun_error_kinds": _kinds(ours),
        "dryrun_baseline_errors": sum(s["errors"] for s in base),
        "dryrun_baseline_error_kinds": _kinds(base),
        "dryrun_statuses": statuses,
        "dryrun_segment_p99_ms": [round(s["p99_ms"], 1) for s in ours],
        "dryrun_baseline_rps": round(statistics.median(s["rps"] for s in base), 1),
        "dryrun_baseline_p99_ms": round(statistics.median(s["p99_ms"] for s in base), 2),
        "dryrun_baseline_segment_p99_ms": [round(s["p99_ms"], 1) for s in base],
        "dryrun_p99_ratio": round(statistics.median(ratios), 3) if ratios else None,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
