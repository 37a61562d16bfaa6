"""WebSocket fan-out: 1,000 sockets on ONE API process (gunicorn, gevent worker, 1 worker process)
each receiving 10 events/s, against the bare flask-sock + one-Redis-subscription endpoint of
``bench/ws_baseline.py`` under the same gunicorn settings, measured in the same run.

Shape: ``channels`` executions with ``sockets / channels`` watchers each. A publisher in its own
process publishes one event per execution every 1/``rate_hz`` s, spread evenly over the period,
carrying its publish time (``data.t``, wall clock: same host). Latency = receive time − ``data.t``,
measured by an asyncio client (``websockets``) in this process. Both servers run at once, each
holding its 1,000 sockets; they are fed in turn (baseline, ours, baseline, ours, …; a warm-up then
a recorded segment each), so drift in the machine's load hits both alike; the p99 of each segment
is reported too, since a shared machine's load shows up as one bad segment. Both endpoints get the
same message shape at the same rate.

The events are published with consecutive seq but not stored: storing them is the worker's cost,
not the fan-out's, and our endpoint reads PostgreSQL only on connect and on a gap. Our sockets
connect with after=0, so each first replays the stored ``execution.queued`` (seq 1) and then
receives seq 2, 3, … live; every socket's sequence is checked (``ws_order_errors`` must be 0).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from bench import stack

WARMUP_S = 1.0  # per segment, before recording
SEGMENT_S = 2.5  # recorded per segment
ROUNDS = 4  # baseline, ours, baseline, ours, …: drift in machine load hits both alike


def publish_loop(redis_url: str, targets: list[tuple[str, str]], rate_hz: float, first_seq: int,
                 active: Any, stop: Any) -> None:
    """Child process: while ``active``, publish to every (channel, execution id) ``rate_hz`` times
    a second; seq keeps counting across pauses."""
    import redis

    client = redis.Redis.from_url(redis_url)
    slots = 10  # spread over the period, as events from many executions would be
    by_slot = [targets[i::slots] for i in range(slots)]
    seq = dict.fromkeys((ch for ch, _ in targets), first_seq)
    slot_s = 1.0 / rate_hz / slots
    at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    k = 0
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        next_t = time.monotonic()
        while active.is_set() and not stop.is_set():
            pipe = client.pipeline(transaction=False)
            now = time.time()
            for channel, eid in by_slot[k % slots]:
                pipe.publish(channel, json.dumps({"execution_id": eid, "seq": seq[channel], "type": "bench.tick",
                                                  "at": at, "data": {"t": now}}, separators=(",", ":")))
                seq[channel] += 1
            pipe.execute()
            k += 1
            next_t += slot_s
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)


class _Side:
    """One endpoint under test: its sockets, its publisher and what its clients measured."""

    def __init__(self, name: str, urls: list[str], targets: list[tuple[str, str]]) -> None:
        self.name, self.urls, self.targets = name, urls, targets
        self.recording = False
        self.lat: list[float] = []
        self.order_errors = 0
        self.conns: list[Any] = []
        self.segment_p99_ms: list[float | None] = []
        self.server_pid = 0  # the gunicorn worker process serving this side
        self.cpu_s = 0.0  # its CPU time during recorded segments

    async def watch(self, url: str, gate: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        async with gate:
            conn = await connect(url, compression=None, ping_interval=None, close_timeout=1, open_timeout=30)
        self.conns.append(conn)
        expect = None
        try:
            async for raw in conn:
                now = time.time()
                ev = json.loads(raw)
                if expect is not None and ev["seq"] != expect:
                    self.order_errors += 1
                expect = ev["seq"] + 1
                if self.recording:
                    self.lat.append(now - ev["data"]["t"])
        except Exception:  # noqa: S110 - closed at the end of the run
            pass

    def result(self, recorded_s: float) -> dict[str, Any]:
        self.lat.sort()
        return {"p50_ms": _pct(self.lat, 0.50), "p99_ms": _pct(self.lat, 0.99),
                "cpu_us_per_delivery": round(self.cpu_s / len(self.lat) * 1e6, 1) if self.lat else None,
                "deliveries_per_s": len(self.lat) / recorded_s, "order_errors": self.order_errors,
                "segment_p99_ms": self.segment_p99_ms}


async def _measure(sides: list[_Side], redis_url: str, rate_hz: float, first_seq: int) -> dict[str, dict]:
    gate = asyncio.Semaphore(100)  # handshakes in flight
    tasks = [asyncio.create_task(side.watch(u, gate)) for side in sides for u in side.urls]
    deadline = time.monotonic() + 60
    while sum(len(s.conns) for s in sides) < len(tasks):
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"only {sum(len(s.conns) for s in sides)}/{len(tasks)} sockets connected: "
                               f"{failed[0].exception() if failed else 'timeout'}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let every handler finish its replay and park on its queue

    # fork, not spawn: spawn re-imports the caller's __main__, which re-runs a bench started from
    # a script without a main guard. The child only runs publish_loop and exits before the
    # sockets it inherited are closed here.
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    pubs = []
    for side in sides:
        active = ctx.Event()
        proc = ctx.Process(target=publish_loop, args=(redis_url, side.targets, rate_hz, first_seq, active, stop),
                           daemon=True)
        proc.start()
        pubs.append((side, active, proc))
    try:
        for _ in range(ROUNDS):
            for side, active, _proc in pubs:
                active.set()
                await asyncio.sleep(WARMUP_S)
                mark, cpu0 = len(side.lat), _cpu_s(side.server_pid)
                side.recording = True
                await asyncio.sleep(SEGMENT_S)
                side.recording = False
                side.cpu_s += _cpu_s(side.server_pid) - cpu0
                side.segment_p99_ms.append(_pct(sorted(side.lat[mark:]), 0.99))
                active.clear()
                await asyncio.sleep(0.3)  # let the tail drain before the other side starts
    finally:
        stop.set()
        for _side, _active, proc in pubs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        await asyncio.gather(*(asyncio.wait_for(c.close(), 2) for s in sides for c in s.conns),
                             return_exceptions=True)
        _nudge(redis_url, [ch for side in sides for ch, _ in side.targets])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {side.name: side.result(ROUNDS * SEGMENT_S) for side in sides}


def _nudge(redis_url: str, channels: list[str]) -> None:
    """One last message per channel, so that handlers blocked on an empty queue notice that their
    client is gone and gunicorn's graceful shutdown does not wait out its timeout."""
    import redis

    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for ch in channels:
        pipe.publish(ch, "{}")
    pipe.execute()
    client.close()


def _worker_pid(master_pid: int) -> int:
    """The single gunicorn worker forked by ``master_pid`` (0 when not found)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master_pid:
                    return int(entry)
        time.sleep(0.1)
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc); 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _catch_ups(metrics_url: str) -> dict[str, int]:
    """PostgreSQL reads our server made after connect, by reason (replay/gap/resync/idle)."""
    import requests

    out: dict[str, int] = {}
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("warden_ws_catch_ups_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def _pct(sorted_s: list[float], q: float) -> float | None:
    if not sorted_s:
        return None
    return round(sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000, 2)


def run(sockets: int = 1000, channels: int = 100, rate_hz: float = 10.0, app: str = "api.app:create_app()") -> dict:
    from api.tokens import StreamTokens
    from shared.db import Database
    from shared.ids import new_id
    from shared.store import executions, workspaces
    from warden.services import free_port

    per = max(1, sockets // channels)
    with stack.services() as env:
        env = dict(env, WEB_CONCURRENCY="1", WARDEN_LOG_LEVEL="WARNING")  # ONE API process
        db = Database(env["DATABASE_URL"], maxconn=2)
        ws = workspaces.get_or_create_workspace(db, "bench-ws")
        ids = [new_id("exec") for _ in range(channels)]
        with db.transaction() as cur:
            for eid in ids:
                executions.insert(cur, executions.NewExecution(
                    id=eid, workspace_id=ws.id, task="bench", compliance_policy="default", policy_version="1",
                    provider="local", model="local-planner-1", budget_cents=100, requested_permissions=None,
                    effective_permissions=[], denied_permissions=[], webhook_url=None,
                    queued_event={"bench": True}))
        db.close()
        tokens = StreamTokens(env["WARDEN_SECRET_KEY"], 3600)
        port_ours, port_base = free_port(), free_port()
        base = _Side("baseline", [f"ws://127.0.0.1:{port_base}/ws/bare/{eid}" for eid in ids for _ in range(per)],
                     [(f"bare:{e}", e) for e in ids])
        ours = _Side("ours", [f"ws://127.0.0.1:{port_ours}/ws/executions/{eid}?after=0&token="
                              f"{tokens.issue(ws.id, eid)}" for eid in ids for _ in range(per)],
                     [(f"executions:{e}", e) for e in ids])
        # Both servers up at once (each its own gunicorn, one gevent worker); only one of them is
        # fed at a time, the other holds its 1,000 idle sockets.
        with stack.gunicorn("bench.ws_baseline:create_app()", port_base, env) as base_proc, \
                stack.gunicorn(app, port_ours, env) as our_proc:
            stack.wait_port(port_base)
            base.server_pid, ours.server_pid = _worker_pid(base_proc.pid), _worker_pid(our_proc.pid)
            res = asyncio.run(_measure([base, ours], env["REDIS_URL"], rate_hz, 2))
            catch_ups = _catch_ups(f"http://127.0.0.1:{port_ours}/metrics")
        b, o = res["baseline"], res["ours"]
    ratio = round(o["p99_ms"] / b["p99_ms"], 3) if o["p99_ms"] and b["p99_ms"] else None
    return {
        "ws_sockets": per * channels,
        "ws_events_per_socket_per_s": rate_hz,
        "ws_p50_ms": o["p50_ms"],
        "ws_p99_ms": o["p99_ms"],
        "ws_baseline_p50_ms": b["p50_ms"],
        "ws_baseline_p99_ms": b["p99_ms"],
        "ws_p99_ratio": ratio,
        "ws_deliveries_per_s": round(o["deliveries_per_s"], 1),
        "ws_baseline_deliveries_per_s": round(b["deliveries_per_s"], 1),
        "ws_expected_deliveries_per_s": per * channels * rate_hz,
        "ws_order_errors": o["order_errors"],
        "ws_segment_p99_ms": o["segment_p99_ms"],
        "ws_catch_ups": catch_ups,
        # CPU the one server process spends per delivered event: insensitive to other load
        "ws_server_cpu_us_per_delivery": o["cpu_us_per_delivery"],
        "ws_baseline_server_cpu_us_per_delivery": b["cpu_us_per_delivery"],
        "ws_baseline_segment_p99_ms": b["segment_p99_ms"],
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(run(), indent=2))
