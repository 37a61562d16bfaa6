"""End to end: POST /api/v1/tasks → terminal event, with the zero-latency `local` provider,
against a bare Celery no-op round trip on the same broker and worker settings, same run.

e2e_ratio = our p50 / bare Celery round-trip p50 (target ≤ 3).
e2e_throughput_ratio = executions/s (submitted by 8 concurrent clients) over no-op tasks/s
(target ≥ 0.4).

Both sides run at once (our API, relay and worker; the no-op worker) and are measured in turn,
round after round (no-op latencies, ours, no-op throughput, ours, …), so drift in a shared
machine's load hits both alike; each worker pool is warmed first (every prefork child runs a few
tasks: its imports, connections and prepared statements). Latency percentiles are over all the
rounds' samples; throughput is the median of the rounds.
"""

from __future__ import annotations

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
WORKER_ARGS = ["--concurrency", "4", "--prefetch-multiplier", "1", "-l", "WARNING"]


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


ROUNDS = 5


class NoopBaseline:
    """The bare Celery peer: a no-op task on the same broker and worker settings."""

    def __init__(self, env: dict[str, str]) -> None:
        from bench.noop_app import app as noop_app

        noop_app.conf.broker_url = env["REDIS_URL"]
        noop_app.conf.result_backend = env["REDIS_URL"]
        self.app = noop_app
        self.cmd = [str(stack.BIN / "celery"), "-A", "bench.noop_app", "worker", "-Q", "noop", *WORKER_ARGS]

    def warm(self) -> None:
        self.app.send_task("bench.noop").get(timeout=60)  # worker up
        for r in [self.app.send_task("bench.noop") for _ in range(16)]:
            r.get(timeout=30)

    def latencies(self, n: int) -> list[float]:
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.app.send_task("bench.noop").get(timeout=30)
            lat.append((time.perf_counter() - t0) * 1000)
        return lat

    def rate(self, n: int) -> float:
        t0 = time.perf_counter()
        for r in [self.app.send_task("bench.noop") for _ in range(n)]:
            r.get(timeout=120)
        return n / (time.perf_counter() - t0)


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


class RawClient:
    """One keep-alive HTTP/1.1 connection sending the same request again and again: its bytes
    are built once, and the answer is read off the socket by its Content-Length. http.client
    spends about 100 µs per request building headers and parsing the reply's through the email
    package, CPU taken from the server it measures on this 2-core machine."""

    def __init__(self, port: int, request: bytes) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request = request
        self._buf = b""

    @staticmethod
    def request(method: str, path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
                *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def send(self) -> bytes:
        """The body of a 2xx answer (raises on anything else)."""
        self._sock.sendall(self._request)
        buf = self._buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head = buf[:end].decode("latin-1")
        status = int(head[9:12])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        start = end + 4
        while len(buf) < start + length:
            buf += self._recv()
        body, self._buf = buf[start:start + length], buf[start + length:]
        if not 200 <= status < 300:
            raise RuntimeError(f"{status}: {body[:200]!r}")
        return body

    def _recv(self) -> bytes:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        return chunk


def run(n_latency: int = 150, n_throughput: int = 200) -> dict:
    from shared.db import Database
    from shared.store import workspaces
    from warden.services import free_port

    with stack.services() as env:
        db = Database(env["DATABASE_URL"], maxconn=2)
        key = workspaces.create_key(db, workspaces.get_or_create_workspace(db, "bench-e2e").id)
        db.close()
        port = free_port()
        base = NoopBaseline(env)
        env = dict(env, WARDEN_DEFAULT_PROVIDER="local", WEB_CONCURRENCY="1")
        worker = [str(stack.BIN / "celery"), "-A", "workers.main", "worker", "-Q", "executions", *WORKER_ARGS]
        relay = [str(stack.BIN / "warden"), "relay"]
        with stack.gunicorn("api.app:create_app()", port, env), stack.process(relay, env), \
                stack.process(worker, env), stack.process(base.cmd, env):
            body = {"task": "List my documents", "compliance_policy": "default", "budget_cents": 1000}
            # A raw keep-alive client (see RawClient): the clients share the 2 cores with what they
            # measure.
            request = RawClient.request("POST", "/api/v1/tasks", port, json.dumps(body).encode(),
                                        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            conns = threading.local()

            def submit(_: int = 0) -> str:
                if not hasattr(conns, "c"):
                    conns.c = RawClient(port, request)
                return str(json.loads(conns.c.send())["execution_id"])

            terminals = TerminalWatcher(env["REDIS_URL"])
            try:
                base.warm()
                warm = [submit() for _ in range(16)]
                terminals.wait(warm, 60)
                lat: list[float] = []
                base_lat: list[float] = []
                rates: list[float] = []
                base_rates: list[float] = []
                for _ in range(ROUNDS):
                    base_lat += base.latencies(n_latency // ROUNDS)
                    for _ in range(n_latency // ROUNDS):
                        t0 = time.perf_counter()
                        eid = submit()
                        terminals.wait([eid], 30)
                        lat.append((terminals.done[eid] - t0) * 1000)
                    base_rates.append(base.rate(n_throughput))
                    # Throughput: submitted by several clients at once, as a queue is fed in practice
                    # (the baseline's producer is not held back by HTTP either).
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(THROUGHPUT_CLIENTS) as pool:
                        ids = list(pool.map(submit, range(n_throughput)))
                    terminals.wait(ids, 300)
                    rates.append(n_throughput / (max(terminals.done[i] for i in ids) - t0))
            finally:
                terminals.close()
    p50, base_p50 = statistics.median(lat), statistics.median(base_lat)
    rate, base_rate = statistics.median(rates), statistics.median(base_rates)
    return {
        "e2e_p50_ms": round(p50, 2),
        "e2e_p99_ms": round(_pct(lat, 0.99), 2),
        "celery_roundtrip_p50_ms": round(base_p50, 2),
        "e2e_ratio": round(p50 / base_p50, 3),
        "e2e_executions_per_s": round(rate, 1),
        "celery_noop_tasks_per_s": round(base_rate, 1),
        "e2e_throughput_ratio": round(rate / base_rate, 3),
        "e2e_round_executions_per_s": [round(r, 1) for r in rates],
        "celery_round_tasks_per_s": [round(r, 1) for r in base_rates],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
