"""The test suite's model server (``tests/fakes/llm.py``: the OpenAI and Anthropic wire formats,
reached by the official SDKs) in a process of its own, scripted for a benchmark: every run's
model ``bench-slow`` calls one tool, then answers, each call ``--delay`` seconds.

``python -m bench.fake_llm --delay 5`` prints its base URL on the first line of stdout and serves
until it is terminated. Its listen backlog is raised so a thousand calls arriving at once are
accepted rather than left to SYN retries (the standard library's default backlog is 5).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from socketserver import TCPServer

MODEL = "bench-slow"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=5.0, help="seconds each model call takes")
    args = ap.parse_args()
    TCPServer.request_queue_size = 4096  # this process serves nothing else
    from tests.fakes.llm import FakeLLM

    fake = FakeLLM()
    fake.script(MODEL, [{"calls": [("list_documents", {})], "delay": args.delay},
                        {"text": "done", "delay": args.delay}])
    print(fake.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    fake.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
