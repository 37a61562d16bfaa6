"""Dry-run compile latency at 50 concurrent clients through the ``compiler`` queue: gunicorn API →
Celery (Redis broker) → a compiler worker process → reply → API, compared with the bare Flask
insert+enqueue baseline's p99 measured in the same run. Bounded to about 30 s."""

from __future__ import annotations

import json
import os
import time

import requests

from bench import stack

BODY = {"intent": "Alert me when AAPL price rises significantly", "entity_scope": "AAPL",
        "delivery": {"type": "notification"}, "dry_run": True}


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


def run(seconds: float = 8.0, clients: int = 50) -> dict:
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
        with stack.gunicorn("bench.baseline_app:create_app()", port_b, env):
            stack.wait_port(port_b)
            base = stack.loadgen(f"http://127.0.0.1:{port_b}/baseline", json.dumps({"task": "x"}), [],
                                 clients=clients, seconds=seconds / 2, warmup=1.0)
        concurrency = str(max(2, os.cpu_count() or 2))
        worker_cmd = [str(stack.BIN / "celery"), "-A", "workers.main", "worker", "-Q", "compiler",
                      "-n", "bench-compiler@%h", "--concurrency", concurrency, "--prefetch-multiplier", "8",
                      "-l", "warning"]
        with stack.process(worker_cmd, env), stack.gunicorn("api.app:create_app()", port_a, env):
            url = f"http://127.0.0.1:{port_a}/api/v1/tasks"
            _wait_compiles(url, key)
            ours = stack.loadgen(url, json.dumps(BODY), [f"Authorization: Bearer {key}"], clients=clients,
                                 seconds=seconds, warmup=1.0)
    return {
        "dryrun_rps": round(ours["rps"], 1),
        "dryrun_p50_ms": round(ours["p50_ms"], 2),
        "dryrun_p99_ms": round(ours["p99_ms"], 2),
        "dryrun_errors": ours["errors"],
        "dryrun_statuses": ours["statuses"],
        "dryrun_baseline_p99_ms": round(base["p99_ms"], 2),
        "dryrun_p99_ratio": round(ours["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
