"""Start what a benchmark needs and stop it afterwards: services (embedded unless
DATABASE_URL/REDIS_URL are set), a migrated database of its own, and processes on free ports."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """Yields an environment with DATABASE_URL (a fresh database) and REDIS_URL."""
    from shared.migrate import create_database, migrate
    from warden.services import ServiceSet

    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    svc = ServiceSet(tmp, persist=False)
    env = dict(os.environ)
    try:
        env.update(svc.start(env, database="warden_bench"))
        if os.environ.get("DATABASE_URL"):
            parts = urlsplit(env["DATABASE_URL"])
            name = f"warden_bench_{secrets.token_hex(3)}"
            create_database(env["DATABASE_URL"], name)
            env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
        migrate(env["DATABASE_URL"])
        env.update({"WARDEN_LOG_LEVEL": "WARNING", "WARDEN_ALLOW_PRIVATE_WEBHOOKS": "1",
                    "WARDEN_SECRET_KEY": "bench", "WARDEN_RATE_LIMIT_PER_S": "1000000",
                    "WARDEN_RATE_LIMIT_BURST": "1000000", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
        yield env
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], *, ready_url: str | None = None,
            timeout: float = 30.0) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if ready_url:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if requests.get(ready_url, timeout=1).status_code < 500:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not become ready at {ready_url}")
                time.sleep(0.1)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(5)


def gunicorn(app: str, port: int, env: dict[str, str]) -> contextlib.AbstractContextManager[subprocess.Popen]:
    e = dict(env, PORT=str(port))
    return process([str(BIN / "gunicorn"), "-c", str(ROOT / "api" / "gunicorn_conf.py"), app], e,
                   ready_url=f"http://127.0.0.1:{port}/healthz" if app.startswith("api.") else None)


def wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def loadgen(url: str, body: str, headers: list[str], *, clients: int = 50, seconds: float = 10.0,
            warmup: float = 2.0) -> dict:
    import json

    args = [sys.executable, "-m", "bench.loadgen", url, "--body", body, "--clients", str(clients),
            "--seconds", str(seconds), "--warmup", str(warmup)]
    for h in headers:
        args += ["--header", h]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=seconds + warmup + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)
