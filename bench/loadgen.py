"""A small closed-loop HTTP load generator: N keep-alive clients, each sending its next request
as soon as the previous answer arrives. Runs in its own process (``python -m bench.loadgen``)
so its CPU use is the same for every target measured in a run.

Hand-written because the usual tools (wrk, hey) are not pip-installable, and a Python client
pointed at both targets in the same run keeps the ratio fair.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

TIMEOUT_S = 30.0  # a request unanswered this long is an error (TimeoutError)


def run(url: str, body: bytes, headers: dict[str, str], clients: int, seconds: float, warmup: float,
        vary_header: str | None = None) -> dict:
    """Every request started inside the measured window is a sample: a 2xx answer counts toward
    ``rps``; any other status, a connection error or a timeout is an error (``errors``, by kind in
    ``error_kinds``). Latency percentiles are over every sample, errors included (an error's
    latency is the time until it was known), so a failure never leaves the figure unnoticed."""
    parts = urlsplit(url)
    wall, t_start = time.time(), time.monotonic()
    measure_from = t_start + warmup
    stop_at = measure_from + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    ok = [0] * clients
    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
        n = 0
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                break
            h = dict(headers)
            if vary_header:
                h[vary_header] = f"{i}-{n}-{t0}"
            n += 1
            kind = None
            try:
                conn.request("POST", parts.path, body=body, headers=h)
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
                if not 200 <= resp.status < 300:
                    kind = status
            except (OSError, http.client.HTTPException) as exc:
                status, kind = None, type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
            t1 = time.monotonic()
            if t0 < measure_from:
                continue
            lat[i].append(t1 - t0)
            with lock:
                if status:
                    statuses[status] = statuses.get(status, 0) + 1
                if kind:
                    kinds[kind] = kinds.get(kind, 0) + 1
                else:
                    ok[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_lat = sorted(x for per in lat for x in per)
    n = len(all_lat)

    def pct(p: float) -> float:
        return all_lat[min(n - 1, int(p * n))] * 1000 if n else float("nan")

    errors = sum(kinds.values())
    return {"requests": n, "ok": sum(ok), "rps": sum(ok) / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "errors": errors, "error_rate": errors / n if n else 0.0, "error_kinds": kinds,
            "statuses": statuses,
            "window_start": wall + warmup, "window_end": wall + warmup + seconds}  # wall clock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--body", default="{}")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    args = ap.parse_args()
    headers = {"Content-Type": "application/json"}
    for h in args.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    print(json.dumps(run(args.url, args.body.encode(), headers, args.clients, args.seconds, args.warmup)))


if __name__ == "__main__":
    main()
