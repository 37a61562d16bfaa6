"""``make bench`` / ``warden bench``: run every benchmark, print one JSON object, write it to
bench/results/latest.json. Each benchmark reports ratios to baselines measured in the same run.

The benchmarks run from a checkout: they use the test suite's model stand-in and fleet harness
(``tests/``), which is not an installed package. ``warden bench`` (a console script, whose
``sys.path`` does not start at the checkout as ``python -m`` does) finds it beside this package."""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

# Module name → what it measures. A module that is missing is skipped and said so.
BENCHMARKS = ("bench_intake", "bench_guard", "bench_compiler", "bench_e2e", "bench_ws", "bench_dryrun",
              "bench_signals", "bench_audit", "bench_workflows", "bench_inflight", "bench_fleet")


CHECKOUT = Path(__file__).resolve().parent.parent


def load(name: str) -> ModuleType | None:
    """The benchmark module ``bench.<name>``, or None when there is no such module."""
    if (CHECKOUT / "tests").is_dir() and str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None
        raise


def main(only: list[str] | None = None) -> int:
    results: dict[str, object] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    skipped, failed = [], {}
    for name in BENCHMARKS:
        if only and name not in only and name.removeprefix("bench_") not in only:
            continue
        print(f"running {name} …", file=sys.stderr, flush=True)
        try:
            module = load(name)
            if module is None:
                skipped.append(name)
                continue
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
