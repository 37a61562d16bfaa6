"""Intake throughput and latency at 50 concurrent clients, against a bare Flask endpoint doing one
INSERT and one Redis LPUSH under the same gunicorn settings, measured in the same run.

Both servers run at once and are loaded in turn (baseline, ours, baseline, ours, …), so drift in a
shared machine's load hits both alike; the reported figures are medians over the segments and the
ratios the medians of the per-round ratios (each segment's own numbers are listed too). A single
10-second pair used to swing the p99 ratio between 0.6 and 2.5 with the baseline's own p99 (29 to
75 ms: how the 50 keep-alive connections happen to split between the two gevent workers).

Like for like: the baseline pushes its message inline, so ours runs with its relay (the Procfile's
``relay`` line) and ``intake_rps`` counts only requests whose run message reached the broker inside
the measured window (its outbox row created and marked dispatched within it); the rate of 2xx
answers is ``intake_answered_rps``. Both sides are driven by the same load generator, which counts
non-2xx answers, connection errors and timeouts as errors (``*_errors``, beside each figure) and
keeps them in the latency percentiles.
"""

from __future__ import annotations

import json
import statistics

from bench import stack

ROUNDS = 5
SEGMENT_S = 4.0
WARMUP_S = 1.0


def _published(db: object, seg: dict) -> dict:
    """How many of the window's run messages reached the broker inside it: outbox rows created
    and marked dispatched (after the broker accepted them) between the window's bounds; and how
    many of its rows were still waiting at its end."""
    row = db.fetchone(  # type: ignore[attr-defined]
        "SELECT count(*) FILTER (WHERE dispatched_at <= to_timestamp(%(end)s)) AS published,"
        " count(*) FILTER (WHERE dispatched_at IS NULL OR dispatched_at > to_timestamp(%(end)s)) AS late"
        " FROM outbox WHERE created_at >= to_timestamp(%(start)s) AND created_at <= to_timestamp(%(end)s)",
        {"start": seg["window_start"], "end": seg["window_end"]})
    return {"published_rps": min(row["published"], seg["ok"]) / SEGMENT_S, "unpublished": row["late"]}


def _sum_kinds(segs: list[dict]) -> dict[str, int]:
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
        ws = workspaces.get_or_create_workspace(db, "bench")
        key = workspaces.create_key(db, ws.id)
        db.close()
        body = json.dumps({"task": "Summarize the discharge note.", "compliance_policy": "hipaa",
                           "budget_cents": 2000})
        port_a, port_b = free_port(), free_port()
        ours, base = [], []
        with stack.gunicorn("bench.baseline_app:create_app()", port_b, env), \
                stack.gunicorn("api.app:create_app()", port_a, env), \
                stack.shell(stack.procfile_command("relay", env), env):
            stack.wait_port(port_b)
            db = Database(env["DATABASE_URL"], maxconn=2)
            for _ in range(ROUNDS):
                base.append(stack.loadgen(f"http://127.0.0.1:{port_b}/baseline", body, [], clients=clients,
                                          seconds=SEGMENT_S, warmup=WARMUP_S))
                seg = stack.loadgen(f"http://127.0.0.1:{port_a}/api/v1/tasks", body,
                                    [f"Authorization: Bearer {key}"], clients=clients, seconds=SEGMENT_S,
                                    warmup=WARMUP_S)
                seg.update(_published(db, seg))
                ours.append(seg)
            db.close()
    statuses: dict[str, int] = {}
    for seg in ours:
        for code, n in seg["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n

    def med(segs: list[dict], k: str) -> float:
        return round(statistics.median(s[k] for s in segs), 2)

    pairs = list(zip(ours, base, strict=True))
    return {
        "intake_rps": med(ours, "published_rps"),
        "intake_answered_rps": med(ours, "rps"),
        "intake_unpublished_at_window_end": [s["unpublished"] for s in ours],
        "intake_p50_ms": med(ours, "p50_ms"),
        "intake_p99_ms": med(ours, "p99_ms"),
        "intake_errors": sum(s["errors"] for s in ours),
        "intake_error_kinds": _sum_kinds(ours),
        "intake_statuses": statuses,
        "intake_segment_rps": [round(s["published_rps"], 1) for s in ours],
        "intake_segment_p99_ms": [round(s["p99_ms"], 1) for s in ours],
        "baseline_insert_enqueue_rps": med(base, "rps"),
        "baseline_p50_ms": med(base, "p50_ms"),
        "baseline_p99_ms": med(base, "p99_ms"),
        "baseline_errors": sum(s["errors"] for s in base),
        "baseline_error_kinds": _sum_kinds(base),
        "baseline_segment_rps": [round(s["rps"], 1) for s in base],
        "baseline_segment_p99_ms": [round(s["p99_ms"], 1) for s in base],
        "intake_ratio": round(statistics.median(o["published_rps"] / b["rps"] for o, b in pairs if b["rps"]), 3),
        "intake_p99_ratio": round(statistics.median(o["p99_ms"] / b["p99_ms"] for o, b in pairs if b["p99_ms"]), 3),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
