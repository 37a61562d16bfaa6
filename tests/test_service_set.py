"""warden.services.ServiceSet starts what the environment does not provide and names the root
process of each server it started (the benchmarks count their CPU by it)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from warden.services import ServiceSet


def test_pids_name_the_servers_it_started_and_only_those(tmp_path: Path):
    svc = ServiceSet(tmp_path, persist=False)
    try:
        env = svc.start({"PATH": os.environ.get("PATH", "")}, database="warden_pids")
        assert set(env) == {"DATABASE_URL", "REDIS_URL"}
        pids = svc.pids()
        assert {name: psutil.Process(pid).name() for name, pid in pids.items()} == {
            "postgres": "postgres", "redis": "redis-server"}
        # A server the environment provides is not one of ours.
        other = ServiceSet(tmp_path / "other", persist=False)
        assert other.start(env) == {} and other.pids() == {}
    finally:
        svc.stop()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids.values())
