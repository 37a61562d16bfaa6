"""Helpers for tests: a live HTTP server in a thread and a small API client."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server


class LiveServer:
    """The real WSGI app behind a real socket (werkzeug's threaded server)."""

    def __init__(self, app: Any) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
        self.app = app
        self._srv = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._srv.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True, name="live-server")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._srv.shutdown()
        self._thread.join(5)
        state = self.app.extensions.get("warden.ws")
        if state is not None:  # the app's fan-out thread would otherwise outlive its Redis
            state.hub.stop()


class ApiClient:
    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.key = key
        self.session = requests.Session()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        h.update(extra or {})
        return h

    def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, json=json, data=data,
                                    headers=self.headers(headers), timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, *,
             what: str = "condition", on_fail: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` passes (an
    AssertionError naming ``what``, with ``on_fail()`` appended when given)."""
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:.0f}s" + (f"; {on_fail()}" if on_fail else ""))
        time.sleep(interval)


ROOT = Path(__file__).resolve().parents[1]


def run_warden(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """``warden ARGS`` in a subprocess from ``cwd``, as a person at a terminal runs it: the
    environment without DATABASE_URL / REDIS_URL, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "warden.cli", *args], capture_output=True, text=True,
                          env=environ, cwd=str(cwd), timeout=120)


class TaskRuns:
    """Counts the runs of one task for one first argument in this process's Celery worker (the
    in-thread one of the test session), from Celery's ``task_postrun`` signal: the positive sign
    that a message was handled, to wait for before asserting that it changed nothing."""

    def __init__(self, task_name: str, first_arg: Any) -> None:
        self.task_name, self.first_arg = task_name, first_arg
        self.states: list[str] = []

    def _seen(self, sender: Any = None, args: Any = None, state: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) == self.task_name and args and args[0] == self.first_arg:
            self.states.append(str(state))

    def __enter__(self) -> TaskRuns:
        from celery.signals import task_postrun

        task_postrun.connect(self._seen, weak=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        from celery.signals import task_postrun

        task_postrun.disconnect(self._seen)

    def wait(self, count: int, timeout: float = 15.0) -> list[str]:
        """Wait until ``count`` runs have finished; their states (SUCCESS, RETRY, ...)."""
        wait_for(lambda: len(self.states) >= count, timeout=timeout)
        return list(self.states)
