"""End to end: POST /api/v1/tasks → terminal event, with the zero-latency `local` provider,
against its bare Celery peer in the same run: a bare Flask endpoint (same gunicorn settings) that
sends a no-op task to a worker with the same settings, whose task publishes one terminal event
(``bench/noop_app.py``).

e2e_ratio = our p50 / the peer's p50, one submission at a time (target ≤ 3).
e2e_throughput_ratio = our executions/s over the peer's tasks/s, each submitted by the same
THROUGHPUT_CLIENTS threads (target ≥ 0.4).

Like for like: both sides are driven by the same code (http.client, one keep-alive connection
per submitting thread, a non-2xx answer fails the benchmark), both completions are seen the same
way (the terminal event on a Redis pattern subscription, read by the same watcher), and both
workers run the Procfile's executions line (pool, concurrency, prefetch, child recycling; only
the log level is lowered to WARNING on both), so this measures the pool the stack ships with.

Both sides run at once (our API, relay and worker; the peer's endpoint and worker) and are
measured in turn, round after round (peer latencies, ours, peer throughput, ours, …), so drift in
a shared machine's load hits both alike; each worker pool is warmed first. Latency percentiles
are over all the rounds' samples; throughput is the median of the rounds.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit

from bench import stack
from shared.redis_client import pack

TERMINAL = {"execution.succeeded", "execution.blocked", "execution.error", "execution.cancelled"}
THROUGHPUT_CLIENTS = 8
# The workflow benchmark's worker (not a ratio to a peer); this one runs the Procfile's line.
WORKER_ARGS = ["--concurrency", "4", "--prefetch-multiplier", "1", "-l", "WARNING"]


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


ROUNDS = 5


class TerminalWatcher:
    """Records when each resource's terminal event is published (one pattern subscription).

    It reads the subscription's replies straight off the socket rather than through redis-py's
    PubSub: this process shares the 2 cores with what it measures and sees every event of every
    run (nine per execution), and redis-py spends about 40 µs turning each into a dict. Here a
    message is sliced out of the buffer and decoded only when it holds a terminal marker."""

    def __init__(self, redis_url: str, pattern: str = "executions:*", id_key: str = "execution_id",
                 is_terminal: Callable[[str], bool] = TERMINAL.__contains__,
                 markers: tuple[bytes, ...] = tuple(f'"type":"{t}"'.encode() for t in sorted(TERMINAL))) -> None:
        """``markers``: substrings one of which every terminal message contains (others are skipped
        undecoded)."""
        self.done: dict[str, float] = {}
        self._markers = markers
        self._id_key, self._is_terminal = id_key, is_terminal
        url = urlsplit(redis_url)
        self._sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=10)
        self._buf = b""
        if url.password:
            auth = [url.username or "default", unquote(url.password)]
            self._sock.sendall(pack(b"AUTH", *(a.encode() for a in auth)))
            self._expect(b"+OK\r\n")
        self._sock.sendall(pack(b"PSUBSCRIBE", pattern.encode()))
        self._expect(b"*3\r\n$10\r\npsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(pattern), pattern.encode()))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _expect(self, prefix: bytes) -> None:
        while len(self._buf) < len(prefix):
            chunk = self._sock.recv(4096)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            self._buf += chunk
        if not self._buf.startswith(prefix):
            raise RuntimeError(f"unexpected reply from redis: {self._buf[:80]!r}")
        self._buf = self._buf[len(prefix):]

    def _run(self) -> None:
        buf = self._buf
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(1 << 18)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf = self._consume(buf + chunk)

    def _consume(self, buf: bytes) -> bytes:
        """Takes every complete reply off ``buf``; returns what is left (a partial reply)."""
        pos = 0
        end = len(buf)
        while True:
            start = pos
            # *4 $8 pmessage $<n> <pattern> $<n> <channel> $<n> <data>: the data is the last
            p = buf.find(b"\r\n", pos)
            if p < 0:
                return buf[start:]
            pos = p + 2
            for _ in range(4):
                p = buf.find(b"\r\n", pos)
                if p < 0:
                    return buf[start:]
                n = int(buf[pos + 1:p])
                if p + 2 + n + 2 > end:
                    return buf[start:]
                a, b = p + 2, p + 2 + n
                pos = b + 2
            if any(buf.find(m, a, b) >= 0 for m in self._markers):
                ev = json.loads(buf[a:b])
                if self._is_terminal(ev.get("type", "")):
                    self.done.setdefault(ev[self._id_key], time.perf_counter())
            if pos == end:
                return b""

    def wait(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(i in self.done for i in ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sum(i not in self.done for i in ids)} did not finish")
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self._sock.close()


class HttpSubmitter:
    """Submits one JSON body again and again, one keep-alive http.client connection per thread;
    returns the new resource's id from a 2xx answer (anything else raises). A connection idle
    for IDLE_S is replaced before use: the server closes idle keep-alive connections after 5 s
    (api/gunicorn_conf.py), and a POST is not retried on a connection found closed."""

    IDLE_S = 2.0

    def __init__(self, port: int, path: str, body: dict, headers: dict[str, str]) -> None:
        self.port, self.path = port, path
        self.body = json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json", **headers}
        self._local = threading.local()

    def __call__(self, _: int = 0) -> str:
        conn = getattr(self._local, "conn", None)
        now = time.monotonic()
        if conn is not None and now - self._local.used > self.IDLE_S:
            conn.close()
            conn = None
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self._local.used = now
        try:
            conn.request("POST", self.path, body=self.body, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"{self.path}: {resp.status} {data[:200]!r}")
        return str(json.loads(data)["execution_id"])


def _latencies(submit: HttpSubmitter, watcher: TerminalWatcher, n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        rid = submit()
        watcher.wait([rid], 30)
        lat.append((watcher.done[rid] - t0) * 1000)
    return lat


def _rate(submit: HttpSubmitter, watcher: TerminalWatcher, n: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(THROUGHPUT_CLIENTS) as pool:
        ids = list(pool.map(submit, range(n)))
    watcher.wait(ids, 300)
    return n / (max(watcher.done[i] for i in ids) - t0)


def run(n_latency: int = 150, n_throughput: int = 200) -> dict:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    with stack.services() as env:
        db = Database(env["DATABASE_URL"], maxconn=2)
        key = workspaces.create_key(db, workspaces.get_or_create_workspace(db, "bench-e2e").id)
        db.close()
        port, base_port = free_port(), free_port()
        env = dict(env, WARDEN_DEFAULT_PROVIDER="local", WEB_CONCURRENCY="1")
        worker = stack.worker_command(log_level="WARNING", environ=env)
        base_worker = stack.worker_command(app="bench.noop_app", queue="noop", node="noop", log_level="WARNING",
                                           environ=env)
        with stack.gunicorn("api.app:create_app()", port, env), \
                stack.gunicorn("bench.noop_app:create_app()", base_port, env), \
                stack.shell(stack.procfile_command("relay", env), env), \
                stack.shell(worker, env), stack.shell(base_worker, env):
            stack.wait_port(base_port)
            body = {"task": "List my documents", "compliance_policy": "default", "budget_cents": 1000}
            ours = HttpSubmitter(port, "/api/v1/tasks", body, {"Authorization": f"Bearer {key}"})
            peer = HttpSubmitter(base_port, "/noop", body, {})
            terminals = TerminalWatcher(env["REDIS_URL"])
            peer_done = TerminalWatcher(env["REDIS_URL"], "noop:*")
            try:
                for submit, watcher in ((ours, terminals), (peer, peer_done)):  # workers up, pools warm
                    watcher.wait([submit()], 60)
                    with ThreadPoolExecutor(THROUGHPUT_CLIENTS) as pool:
                        watcher.wait(list(pool.map(submit, range(16))), 60)
                lat: list[float] = []
                base_lat: list[float] = []
                rates: list[float] = []
                base_rates: list[float] = []
                for _ in range(ROUNDS):
                    base_lat += _latencies(peer, peer_done, n_latency // ROUNDS)
                    lat += _latencies(ours, terminals, n_latency // ROUNDS)
                    base_rates.append(_rate(peer, peer_done, n_throughput))
                    rates.append(_rate(ours, terminals, n_throughput))
            finally:
                terminals.close()
                peer_done.close()
    p50, base_p50 = statistics.median(lat), statistics.median(base_lat)
    rate, base_rate = statistics.median(rates), statistics.median(base_rates)
    return {
        "e2e_p50_ms": round(p50, 2),
        "e2e_p99_ms": round(_pct(lat, 0.99), 2),
        "celery_roundtrip_p50_ms": round(base_p50, 2),
        "celery_roundtrip_p99_ms": round(_pct(base_lat, 0.99), 2),
        "e2e_ratio": round(p50 / base_p50, 3),
        "e2e_executions_per_s": round(rate, 1),
        "celery_noop_tasks_per_s": round(base_rate, 1),
        "e2e_throughput_ratio": round(rate / base_rate, 3),
        "e2e_round_executions_per_s": [round(r, 1) for r in rates],
        "celery_round_tasks_per_s": [round(r, 1) for r in base_rates],
        "e2e_clients": THROUGHPUT_CLIENTS,
        "e2e_worker": stack.expand(worker, env),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
