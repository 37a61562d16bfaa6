"""Workflow overhead: a 10-stage chain (each stage depends on the previous one) with the
zero-latency ``local`` provider, against ten single executions measured in the same run.

workflow_overhead_ms = chain p50 (POST /workflows → workflow.succeeded) − 10 × single-execution p50
(POST /tasks → terminal event): what advancing from one stage to the next costs (the advance task,
the outbox hop, and the relay's wake-up or poll).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import requests

from bench import stack
from bench.bench_e2e import WORKER_ARGS, TerminalWatcher

STAGES = 10


def _workflow_done(redis_url: str) -> TerminalWatcher:
    """When each workflow's terminal event is published (pattern subscription on workflows:*)."""
    return TerminalWatcher(redis_url, "workflows:*", "workflow_id",
                           lambda t: t.startswith("workflow.") and t != "workflow.created",
                           markers=(b'"type":"workflow.',))


def run(n_single: int = 20, n_chains: int = 5) -> dict[str, Any]:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    with stack.services() as env:
        db = Database(env["DATABASE_URL"], maxconn=2)
        key = workspaces.create_key(db, workspaces.get_or_create_workspace(db, "bench-workflows").id)
        db.close()
        port = free_port()
        env = dict(env, WARDEN_DEFAULT_PROVIDER="local", WEB_CONCURRENCY="1")
        worker = [str(stack.BIN / "celery"), "-A", "workers.main", "worker", "-Q", "executions", *WORKER_ARGS]
        with stack.gunicorn("api.app:create_app()", port, env), \
                stack.process([str(stack.BIN / "warden"), "relay"], env), stack.process(worker, env):
            api = f"http://127.0.0.1:{port}/api/v1"
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {key}"
            task: dict[str, Any] = {"task": "List my documents", "compliance_policy": "default", "budget_cents": 1000}
            chain: dict[str, Any] = {"stages": [{**task, "name": f"s{i}", "depends_on": [f"s{i - 1}"] if i else []}
                                for i in range(STAGES)]}
            terminals, workflows = TerminalWatcher(env["REDIS_URL"]), _workflow_done(env["REDIS_URL"])
            try:
                warm = s.post(f"{api}/tasks", json=task, timeout=10).json()["execution_id"]
                terminals.wait([warm], 60)
                single = []
                for _ in range(n_single):
                    t0 = time.perf_counter()
                    eid = s.post(f"{api}/tasks", json=task, timeout=10).json()["execution_id"]
                    terminals.wait([eid], 30)
                    single.append((terminals.done[eid] - t0) * 1000)
                chains = []
                for _ in range(n_chains):
                    t0 = time.perf_counter()
                    r = s.post(f"{api}/workflows", json=chain, timeout=10)
                    r.raise_for_status()
                    wf = r.json()["workflow_id"]
                    workflows.wait([wf], 120)
                    chains.append((workflows.done[wf] - t0) * 1000)
                    status = s.get(f"{api}/workflows/{wf}", timeout=10).json()["status"]
                    if status != "succeeded":
                        raise RuntimeError(f"benchmark workflow ended {status}")
            finally:
                terminals.close()
                workflows.close()
    single_p50, chain_p50 = statistics.median(single), statistics.median(chains)
    return {
        "workflow_overhead_ms": round(chain_p50 - STAGES * single_p50, 1),
        "workflow_chain10_p50_ms": round(chain_p50, 1),
        "workflow_single_execution_p50_ms": round(single_p50, 2),
        "workflow_overhead_per_stage_ms": round((chain_p50 - STAGES * single_p50) / STAGES, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
