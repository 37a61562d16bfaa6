"""WebSocket fan-out: 1,000 sockets on ONE API process (gunicorn, gevent worker, 1 worker process)
each receiving 10 events/s, against the bare flask-sock + one-Redis-subscription endpoint of
``bench/ws_baseline.py`` under the same gunicorn settings, measured in the same run.

Shape: ``channels`` executions with ``sockets / channels`` watchers each. A publisher in its own
process publishes one event per execution every 1/``rate_hz`` s, spread evenly over the period,
carrying its publish time (``data.t``, wall clock: same host). Latency = receive time − ``data.t``,
measured in this process by an asyncio client that reads frames straight off its sockets
(``_Watcher``). Both servers run at once, each holding its 1,000 sockets; they are fed in turn
(baseline, ours, baseline, ours, …; a warm-up then a recorded segment each), so drift in the
machine's load hits both alike; the p99 of each segment is reported too, since a shared
machine's load shows up as one bad segment. Both endpoints get the same message shape at the
same rate.

The events are published with consecutive seq but not stored: storing them is the worker's cost,
not the fan-out's, and our endpoint reads PostgreSQL only on connect and on a gap. Our sockets
connect with after=0, so each first replays the stored ``execution.queued`` (seq 1) and then
receives seq 2, 3, … live; every socket's sequence is checked (``ws_order_errors`` must be 0).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import stack

_SEQ = re.compile(rb'"seq":(\d+)')
_T = re.compile(rb'"t":([0-9.eE+-]+)')

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
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


class _Watcher(asyncio.Protocol):
    """One client socket, read straight off the transport: the upgrade, then unmasked server
    frames sliced out of the buffer, seq and publish time read with a regex. The clients share
    this process and the 2 cores with the servers they measure, and a full WebSocket client
    library plus ``json.loads`` costs several times what the servers spend per delivery; the
    latencies would then mostly measure the client. Both sides are read by this same code."""

    def __init__(self, side: _Side, target: str, host: str) -> None:
        self.side, self.expect = side, None
        self.key = base64.b64encode(os.urandom(16))
        self.request = (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            accept = base64.b64encode(hashlib.sha1(self.key + _WS_GUID).digest())  # noqa: S324 - RFC 6455
            if not buf.startswith(b"HTTP/1.1 101") or accept not in buf[:end]:
                self.ready.set_exception(RuntimeError(buf[:end].decode("latin-1")))
                return
            self.upgraded = True
            self.ready.set_result(None)
            buf = buf[end + 4:]
        pos, size = 0, len(buf)
        while size - pos >= 2:
            n, head = buf[pos + 1] & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < head + n:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:
                self.side.on_event(self, buf[pos + head:pos + head + n], now)
            elif opcode == 8:
                self.close()
            pos += head + n
        self.buf = buf[pos:]

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            mask = os.urandom(4)
            self.transport.write(b"\x88\x82" + mask + bytes(b ^ m for b, m in zip(b"\x03\xe8", mask[:2], strict=True)))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)


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
        split = urlsplit(url)
        loop = asyncio.get_running_loop()
        async with gate:
            _transport, proto = await asyncio.wait_for(loop.create_connection(
                lambda: _Watcher(self, f"{split.path}?{split.query}", split.netloc),
                split.hostname, split.port), 30)
            await asyncio.wait_for(proto.ready, 30)
        self.conns.append(proto)
        await proto.closed

    def on_event(self, watcher: _Watcher, payload: bytes, now: float) -> None:
        seq = int(_SEQ.search(payload)[1])  # type: ignore[index]
        if watcher.expect is not None and seq != watcher.expect:
            self.order_errors += 1
        watcher.expect = seq + 1
        if self.recording:
            self.lat.append(now - float(_T.search(payload)[1]))  # type: ignore[index]

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
        for side in sides:
            for conn in side.conns:
                conn.close()
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
        stream_key = workspaces.authenticate(db, workspaces.create_key(db, ws.id))
        assert stream_key is not None
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
                              f"{tokens.issue(ws.id, eid, stream_key.key_id)}" for eid in ids for _ in range(per)],
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
