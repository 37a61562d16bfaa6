"""``make bench`` / ``warden bench``: run every benchmark, print one JSON object, write it to
bench/results/latest.json. Each benchmark reports ratios to baselines measured in the same run."""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

# Module name → what it measures. A module that is missing is skipped and said so.
BENCHMARKS = ("bench_intake", "bench_guard", "bench_compiler", "bench_e2e", "bench_ws", "bench_dryrun",
              "bench_signals", "bench_audit", "bench_workflows", "bench_inflight", "bench_fleet")


def main(only: list[str] | None = None) -> int:
    results: dict[str, object] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    skipped, failed = [], {}
    for name in BENCHMARKS:
        if only and name not in only and name.removeprefix("bench_") not in only:
            continue
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                skipped.append(name)
                continue
            raise
        print(f"running {name} …", file=sys.stderr, flush=True)
        try:
            results.update(module.run())
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
    if skipped:
        results["skipped"] = skipped
    if failed:
        results["failed"] = failed
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=True)
    (out / "latest.json").write_text(text + "\n")
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
