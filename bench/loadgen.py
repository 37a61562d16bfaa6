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


def run(url: str, body: bytes, headers: dict[str, str], clients: int, seconds: float, warmup: float,
        vary_header: str | None = None) -> dict:
    parts = urlsplit(url)
    stop_at = time.monotonic() + warmup + seconds
    measure_from = time.monotonic() + warmup
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        n = 0
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                break
            h = dict(headers)
            if vary_header:
                h[vary_header] = f"{i}-{n}-{t0}"
            n += 1
            try:
                conn.request("POST", parts.path, body=body, headers=h)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                continue
            t1 = time.monotonic()
            if t0 >= measure_from:
                lat[i].append(t1 - t0)
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
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

    return {"requests": n, "rps": n / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "errors": sum(errors), "statuses": {str(k): v for k, v in statuses.items()}}


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
