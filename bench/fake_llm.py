"""The test suite's model (``tests/fakes/llm.py``: its scripts and its OpenAI and Anthropic
answers, reached by the official SDKs) served from a process of its own for a benchmark: every
run's model ``bench-slow`` calls one tool, then answers, each call ``--delay`` seconds.

``python -m bench.fake_llm --delay 5`` prints its base URL on the first line of stdout and serves
until it is terminated.

The test suite serves the fake with the standard library's threaded HTTP server, a thread per
connection. A benchmark holds a thousand calls open at once on the same two cores as the stack it
measures, where a real vendor's servers cost the host nothing, so here the same answers come from
one asyncio loop (HTTP/1.1 with keep-alive, as the vendors' APIs): a call waiting on its delay
costs a timer, not a thread, and the stand-in's CPU stays a small share of the measurement. The
loop is uvloop's where installed (the dev extra), with orjson for the bodies: 0.14 ms of CPU a
call against 0.21 with the standard library's loop and json (2,000 calls of a run's size over 400
keep-alive connections), CPU that ``bench_inflight`` counts as ``harness``, not as the stack's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import orjson

from tests.fakes.llm import FakeLLM, wire_for

MODEL = "bench-slow"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           529: "Overloaded"}


def _respond(fake: FakeLLM, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any], float]:
    try:
        body = orjson.loads(raw or b"{}")
    except ValueError:
        return 400, {"error": {"message": "the body is not JSON", "type": "invalid_request_error"}}, 0.0
    return fake.respond(wire_for(path), body, headers)


async def _serve_connection(fake: FakeLLM, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            if method != "POST":
                status, payload, delay = 404, {"error": {"message": f"no {method} {path}"}}, 0.0
            else:
                status, payload, delay = _respond(fake, path, headers, raw)
            if delay:
                await asyncio.sleep(delay)
            extra = "".join(f"{k}: {v}\r\n" for k, v in payload.pop("_headers", {}).items())
            data = payload["_raw"] if "_raw" in payload else orjson.dumps(payload)
            writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\ncontent-type: application/json\r\n"
                         f"content-length: {len(data)}\r\n{extra}\r\n".encode("latin-1") + data)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass  # the client closed the connection, or gave up on the call (a cancelled run, a stopped worker)
    finally:
        writer.close()


async def _main(delay: float) -> None:
    fake = FakeLLM(serve=False)
    fake.script(MODEL, [{"calls": [("list_documents", {})], "delay": delay}, {"text": "done", "delay": delay}])
    # A thousand calls arrive at once: a deep listen backlog, so none is left to SYN retries.
    server = await asyncio.start_server(lambda r, w: _serve_connection(fake, r, w), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=5.0, help="seconds each model call takes")
    args = ap.parse_args()
    try:
        import uvloop  # the dev extra has it (not on Windows)
    except ImportError:
        asyncio.run(_main(args.delay))
    else:
        uvloop.run(_main(args.delay))
    sys.exit(0)


if __name__ == "__main__":
    main()
