"""``make bench`` runs ``warden bench``, a console script: its ``sys.path`` does not start at the
checkout as ``python -m bench.run`` does, and the benchmarks use the test suite's fakes and fleet
harness (``tests/``, not an installed package). Every benchmark must still load from there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LOAD_ALL = "from bench.run import BENCHMARKS, load; print(sorted(n for n in BENCHMARKS if load(n) is not None))"


def test_every_benchmark_loads_outside_the_checkout(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", LOAD_ALL], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    from bench.run import BENCHMARKS

    assert out.stdout.strip() == str(sorted(BENCHMARKS))

