"""Fleet scale and recovery, on network-namespace hosts (tests/fleet/harness.py; needs root).

Each executions worker host is capped low (WARDEN_EXECUTIONS_CONCURRENCY=2) and every run waits
on its model (three calls of 0.5 s on the fake LLM), so the hosts, not this machine's cores, are
the limit. Throughput is measured with 3, then 2, then 1 executions hosts (the others stopped
cleanly), 12 runs per host each time, from the first submission to the last terminal event.

- ``fleet_scale_3`` = thr(3) / (3 × thr(1)); target ≥ 0.9.
- ``fleet_recovery_s``: an executions host holding runs dies (link down, every process
  SIGKILLed); seconds from its death to the last of its runs ending on another host. Bounded by
  about one and a half leases (WARDEN_LEASE_S, 10 s here) plus what is left of the runs.

Run alone: ``python -m bench.bench_fleet``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.fleet import netns
from tests.fleet import scenarios as sc
from tests.fleet.harness import EXEC_HOSTS, Fleet

CAP = 2
RUNS_PER_HOST = 12
MODEL_DELAY_S = 0.5
VISIBILITY_S = 20

ENV = {
    "WARDEN_EXECUTIONS_CONCURRENCY": str(CAP),
    "WARDEN_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
    "WARDEN_EXECUTIONS_TIME_LIMIT_S": "15",
    "WARDEN_LEASE_S": "10",
    "WARDEN_DEFAULT_PROVIDER": "local",
    "WARDEN_LOG_LEVEL": "WARNING",
}


def run() -> dict[str, Any]:
    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"bench_fleet: left out: {reason}", file=sys.stderr)
        return {"fleet_skipped": reason}
    out: dict[str, Any] = {"fleet_cap_per_host": CAP, "fleet_model_delay_s": MODEL_DELAY_S}
    with Fleet(env=ENV) as fleet:
        model = sc.script_model(fleet, delay=MODEL_DELAY_S)
        thr: dict[int, float] = {}
        for k in (3, 2, 1):
            for name in EXEC_HOSTS[k:]:
                if fleet.hosts[name].procs:
                    fleet.hosts[name].stop()
            thr[k] = sc.throughput(fleet, model, RUNS_PER_HOST * k)
            print(f"bench_fleet: {k} executions host(s): {thr[k]:.2f} runs/s", file=sys.stderr, flush=True)
        out.update({f"fleet_thr_{k}_per_s": round(v, 3) for k, v in sorted(thr.items())})
        out["fleet_scale_2"] = round(thr[2] / (2 * thr[1]), 3)
        out["fleet_scale_3"] = round(thr[3] / (3 * thr[1]), 3)
        fleet.ensure_healthy()  # all three back (and warm)
        out["fleet_visibility_timeout_s"] = VISIBILITY_S
        out["fleet_lease_s"] = float(ENV["WARDEN_LEASE_S"])
        try:
            ids, held, recovery = sc.kill_and_recover(fleet, "exec2", model, 10 * CAP, min_held=CAP,
                                                      timeout=VISIBILITY_S + 120)
        except AssertionError as exc:  # runs left behind: say so, and keep the scale figures
            out["fleet_recovery_s"] = None
            out["fleet_recovery_error"] = str(exc)
            return out
        problems = sc.exactly_once_problems(sc.records(fleet, ids), ids)
        out["fleet_recovery_s"] = round(recovery, 2)
        out["fleet_recovery_runs_held"] = len(held)
        out["fleet_recovery_problems"] = len(problems)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2, sort_keys=True))
