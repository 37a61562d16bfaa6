"""A local webhook / HTTP receiver that records requests and answers with scripted statuses."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """``statuses``: the answers, in order (then 200); an item may be ``(status, {header: value})``."""

    def __init__(self, statuses: list[Any] | None = None, body: bytes = b"ok") -> None:
        self.statuses = list(statuses or [])
        self.requests: list[dict[str, Any]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                rec.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": data, "at": time.monotonic()})
                status = rec.statuses.pop(0) if rec.statuses else 200
                status, extra = status if isinstance(status, tuple) else (status, {})
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="receiver").start()

    def stop(self) -> None:
        self.server.shutdown()
