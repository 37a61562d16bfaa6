"""Intake throughput and latency at 50 concurrent clients, against a bare Flask endpoint doing one
INSERT and one Redis LPUSH under the same gunicorn settings, measured in the same run."""

from __future__ import annotations

import json

from bench import stack


def run(seconds: float = 10.0, clients: int = 50) -> dict:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    with stack.services() as env:
        db = Database(env["DATABASE_URL"], maxconn=2)
        db.execute("CREATE TABLE IF NOT EXISTS bench_baseline (id text PRIMARY KEY, body jsonb NOT NULL,"
                   " created_at timestamptz NOT NULL DEFAULT now())")
        ws = workspaces.get_or_create_workspace(db, "bench")
        key = workspaces.create_key(db, ws.id)
        db.close()
        body = json.dumps({"task": "Summarize the discharge note.", "compliance_policy": "hipaa",
                           "budget_cents": 2000})
        port_a, port_b = free_port(), free_port()
        with stack.gunicorn("bench.baseline_app:create_app()", port_b, env):
            stack.wait_port(port_b)
            base = stack.loadgen(f"http://127.0.0.1:{port_b}/baseline", body, [], clients=clients, seconds=seconds)
        with stack.gunicorn("api.app:create_app()", port_a, env):
            ours = stack.loadgen(f"http://127.0.0.1:{port_a}/api/v1/tasks", body, [f"Authorization: Bearer {key}"],
                                 clients=clients, seconds=seconds)
    return {
        "intake_rps": round(ours["rps"], 1),
        "intake_p50_ms": round(ours["p50_ms"], 2),
        "intake_p99_ms": round(ours["p99_ms"], 2),
        "intake_errors": ours["errors"],
        "intake_statuses": ours["statuses"],
        "baseline_insert_enqueue_rps": round(base["rps"], 1),
        "baseline_p50_ms": round(base["p50_ms"], 2),
        "baseline_p99_ms": round(base["p99_ms"], 2),
        "intake_ratio": round(ours["rps"] / base["rps"], 3) if base["rps"] else None,
        "intake_p99_ratio": round(ours["p99_ms"] / base["p99_ms"], 3) if base["p99_ms"] else None,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
