"""A local HTTP server speaking the OpenAI chat-completions and Anthropic messages wire formats,
scripted per model name, so the official SDKs run unmodified against it.

A script is a list of turns; the turn answered is the number of assistant messages already in
the request (so a retried or resumed request gets the same answer). A turn is a dict:
``calls`` [(tool, arguments)], ``text``, ``usage`` (input, output), ``delay`` seconds, and
``fail`` [(status, times)] to fail that many requests first with that status (with a
``retry-after`` header of ``retry_after`` seconds when the turn has one), ``delay_first``
seconds to stall only the first request of that turn (a worker killed mid-call), and ``kill``
``"peer"`` to SIGKILL the process that sent the request (found by the connection's local port)
instead of answering: a model answer that makes the process die at the same step every time;
``raw`` bytes to answer 200 with that body as it is (an answer that is not the wire format).
``answered[model]`` counts the answers sent, late ones included; ``killed[model]`` the pids killed.

It listens on loopback unless given another ``host`` (the fleet tests serve it on a namespace
host's own address, for worker hosts to reach over their network).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeLLM:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, serve: bool = True) -> None:
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._failures: dict[tuple[str, int], int] = defaultdict(int)
        self.answered: dict[str, int] = defaultdict(int)
        self.killed: dict[str, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as the vendors' APIs: the SDKs reuse their connections (HTTP/1.0 would
            # make every call a new TCP connection, which no real provider costs).
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                wire = wire_for(self.path)
                status, payload = fake.answer(wire, body, {k.lower(): v for k, v in self.headers.items()},
                                              peer=self.client_address)
                if status == 0:  # the caller was killed: nothing to answer
                    self.close_connection = True
                    return
                extra = payload.pop("_headers", {})
                data = payload["_raw"] if "_raw" in payload else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on the call (a cancelled run, a stopped or killed worker)
                finally:
                    with fake._lock:
                        fake.answered[body.get("model", "")] += 1

        if not serve:  # the scripts and answers only, for a server of the caller's (bench/fake_llm.py)
            self.server = None
            self.url = ""
            return
        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-llm").start()

    def script(self, model: str, turns: list[dict[str, Any]]) -> str:
        self.scripts[model] = turns
        return model

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def answer(self, wire: str, body: dict[str, Any], headers: dict[str, str],
               peer: tuple[str, int] | None = None) -> tuple[int, dict[str, Any]]:
        status, payload, delay = self.respond(wire, body, headers, peer)
        if delay:
            time.sleep(delay)
        return status, payload

    def respond(self, wire: str, body: dict[str, Any], headers: dict[str, str],
                peer: tuple[str, int] | None = None) -> tuple[int, dict[str, Any], float]:
        """The answer to a request and how long to wait before sending it (the caller waits)."""
        model = body.get("model", "")
        with self._lock:
            self.requests[model].append({"wire": wire, "body": body, "headers": headers})
        turns = self.scripts.get(model)
        if turns is None:
            return 404, _error(wire, f"model {model} not found"), 0.0
        turn_no = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        turn = turns[min(turn_no, len(turns) - 1)]
        for status, times in turn.get("fail", []):
            with self._lock:
                key = (model, turn_no * 100 + status)
                if self._failures[key] < times:
                    self._failures[key] += 1
                    error = _error(wire, f"scripted failure {status}")
                    if turn.get("retry_after") is not None:
                        error["_headers"] = {"retry-after": str(turn["retry_after"])}
                    return status, error, 0.0
        if turn.get("kill") == "peer" and peer is not None:
            pid = _pid_of_peer(peer[1])
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                with self._lock:
                    self.killed[model].append(pid)
                return 0, {}, 0.0
        if "raw" in turn:
            return 200, {"_raw": turn["raw"]}, 0.0
        delay = float(turn.get("delay") or 0.0)
        if turn.get("delay_first"):
            with self._lock:
                first = (model, turn_no, "delayed") not in self._failures
                self._failures[(model, turn_no, "delayed")] = 1  # type: ignore[index]
            if first:
                delay += turn["delay_first"]
        calls = [(name, args) for name, args in turn.get("calls", [])]
        usage = turn.get("usage", (100, 20))
        text = turn.get("text")
        if wire == "openai":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [{"id": f"call_{turn_no}_{i}", "type": "function",
                                          "function": {"name": n, "arguments": json.dumps(a)}}
                                         for i, (n, a) in enumerate(calls)]
            return 200, {"id": f"chatcmpl-{turn_no}", "object": "chat.completion", "created": int(time.time() + delay),
                         "model": model, "choices": [{"index": 0, "message": message,
                                                      "finish_reason": "tool_calls" if calls else "stop"}],
                         "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                   "total_tokens": usage[0] + usage[1]}}, delay
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content += [{"type": "tool_use", "id": f"toolu_{turn_no}_{i}", "name": n, "input": a}
                    for i, (n, a) in enumerate(calls)]
        return 200, {"id": f"msg_{turn_no}", "type": "message", "role": "assistant", "model": model,
                     "content": content, "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None,
                     "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}, delay


class _Server(ThreadingHTTPServer):
    # Hundreds of calls arrive at once when many runs are in flight; the standard library's listen
    # backlog of 5 would leave the rest to SYN retries (a second or more each).
    request_queue_size = 1024


def _pid_of_peer(port: int) -> int | None:
    """The local process whose TCP connection to us has local port ``port`` (not this process)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid and conn.pid != os.getpid():
            return int(conn.pid)
    return None


def wire_for(path: str) -> str:
    """The wire format a request path speaks: Anthropic's messages, else OpenAI's chat completions."""
    return "anthropic" if path.endswith("/messages") else "openai"


def _error(wire: str, message: str) -> dict[str, Any]:
    if wire == "openai":
        return {"error": {"message": message, "type": "server_error", "code": None}}
    return {"type": "error", "error": {"type": "api_error", "message": message}}
