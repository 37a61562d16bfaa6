"""WebSocket fan-out: 1,000 sockets on ONE API process (gunicorn, gevent worker, 1 worker process)
each receiving 10 events/s, against the bare flask-sock + one-Redis-subscription endpoint of
``bench/ws_baseline.py`` under the same gunicorn settings, measured in the same run.

Shape: ``channels`` executions with ``sockets / channels`` watchers each. A publisher in its own
process publishes one event per execution every 1/``rate_hz`` s, spread evenly over the period,
carrying its publish time (``data.t``, wall clock: same host). Latency = receive time − ``data.t``,
measured by an asyncio client (``websockets``) in this process after a warm-up. Both endpoints
get byte-for-byte the same message shape at the same rate.

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
from typing import Any

from bench import stack

WARMUP_S = 3.0
MEASURE_S = 10.0


def publish_loop(redis_url: str, targets: list[tuple[str, str]], rate_hz: float, first_seq: int,
                 stop: Any) -> None:
    """Child process: publish to every (channel, execution id) ``rate_hz`` times a second."""
    import redis

    client = redis.Redis.from_url(redis_url)
    slots = 10  # spread over the period, as events from many executions would be
    by_slot = [targets[i::slots] for i in range(slots)]
    seq = dict.fromkeys((ch for ch, _ in targets), first_seq)
    slot_s = 1.0 / rate_hz / slots
    at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    next_t = time.monotonic()
    k = 0
    while not stop.is_set():
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


async def _phase(urls: list[str], redis_url: str, targets: list[tuple[str, str]], rate_hz: float,
                 first_seq: int) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    lat: list[float] = []
    received = 0
    order_errors = 0
    window = [float("inf"), float("inf")]

    async def watch(url: str, conns: list[Any], ready: asyncio.Semaphore) -> None:
        nonlocal received, order_errors
        async with ready:
            conn = await connect(url, compression=None, ping_interval=None, close_timeout=1, open_timeout=30,
                                 max_size=2**20)
        conns.append(conn)
        expect = None
        try:
            async for raw in conn:
                now = time.time()
                ev = json.loads(raw)
                if expect is not None and ev["seq"] != expect:
                    order_errors += 1
                expect = ev["seq"] + 1
                t = ev["data"].get("t")
                if t is not None and window[0] <= now < window[1]:
                    lat.append(now - t)
                    received += 1
        except Exception:  # noqa: S110 - closed at the end of the phase
            pass

    conns: list[Any] = []
    gate = asyncio.Semaphore(100)  # handshakes in flight
    tasks = [asyncio.create_task(watch(u, conns, gate)) for u in urls]
    deadline = time.monotonic() + 60
    while len(conns) < len(urls):
        if time.monotonic() > deadline or any(t.done() and t.exception() for t in tasks):
            raise RuntimeError(f"only {len(conns)}/{len(urls)} sockets connected")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let every handler finish its replay and park on its queue

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    pub = ctx.Process(target=publish_loop, args=(redis_url, targets, rate_hz, first_seq, stop), daemon=True)
    pub.start()
    t0 = time.time()
    window[:] = [t0 + WARMUP_S, t0 + WARMUP_S + MEASURE_S]
    await asyncio.sleep(WARMUP_S + MEASURE_S + 0.3)
    stop.set()
    pub.join(5)
    if pub.is_alive():
        pub.kill()
    await asyncio.gather(*(asyncio.wait_for(c.close(), 2) for c in conns), return_exceptions=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat.sort()
    return {"p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99), "deliveries_per_s": received / MEASURE_S,
            "order_errors": order_errors, "expected_per_s": len(urls) * rate_hz}


def _pct(sorted_s: list[float], q: float) -> float | None:
    if not sorted_s:
        return None
    return round(sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000, 2)


def run(sockets: int = 1000, channels: int = 100, rate_hz: float = 10.0) -> dict:
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

        base_urls = [f"ws://127.0.0.1:{port_base}/ws/bare/{eid}" for eid in ids for _ in range(per)]
        with stack.gunicorn("bench.ws_baseline:create_app()", port_base, env):
            stack.wait_port(port_base)
            base = asyncio.run(_phase(base_urls, env["REDIS_URL"], [(f"bare:{e}", e) for e in ids], rate_hz, 2))

        our_urls = [f"ws://127.0.0.1:{port_ours}/ws/executions/{eid}?after=0&token={tokens.issue(ws.id, eid)}"
                    for eid in ids for _ in range(per)]
        with stack.gunicorn("api.app:create_app()", port_ours, env):
            ours = asyncio.run(_phase(our_urls, env["REDIS_URL"], [(f"executions:{e}", e) for e in ids],
                                      rate_hz, 2))
    ratio = round(ours["p99_ms"] / base["p99_ms"], 3) if ours["p99_ms"] and base["p99_ms"] else None
    return {
        "ws_sockets": per * channels,
        "ws_events_per_socket_per_s": rate_hz,
        "ws_p50_ms": ours["p50_ms"],
        "ws_p99_ms": ours["p99_ms"],
        "ws_baseline_p50_ms": base["p50_ms"],
        "ws_baseline_p99_ms": base["p99_ms"],
        "ws_p99_ratio": ratio,
        "ws_deliveries_per_s": round(ours["deliveries_per_s"], 1),
        "ws_baseline_deliveries_per_s": round(base["deliveries_per_s"], 1),
        "ws_expected_deliveries_per_s": ours["expected_per_s"],
        "ws_order_errors": ours["order_errors"],
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(run(), indent=2))
