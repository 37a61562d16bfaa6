"""Pieces for tests that own their services: a fresh database on the session's PostgreSQL server
and a real Celery worker subprocess, configured through the environment only."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def fresh_database(server_url: str) -> str:
    """A new, migrated database on the server ``server_url`` points at; its URL."""
    from shared.migrate import create_database, migrate

    name = f"warden_own_{secrets.token_hex(4)}"
    parts = urlsplit(server_url)
    create_database(urlunsplit(parts._replace(path="/postgres")), name)
    url = urlunsplit(parts._replace(path="/" + name))
    migrate(url)
    return url


class WorkerProcess:
    """``celery -A workers.main worker`` with only the given environment (no test settings leak in)."""

    def __init__(self, log_path: Path, queue: str, *args: str, loglevel: str = "INFO", **env: str) -> None:
        own = ("OPENAI_", "ANTHROPIC_", "WARDEN_", "CELERY_", "DATABASE_URL", "REDIS_URL")
        base = {k: v for k, v in os.environ.items() if not k.startswith(own)}
        base.update({"WARDEN_SECRET_KEY": "test-secret", "WARDEN_DEFAULT_PROVIDER": "local",
                     "WARDEN_LOG_LEVEL": loglevel, "WARDEN_LOG_JSON": "0"}, **env)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-Q", queue,
             "-n", f"{queue}-{secrets.token_hex(3)}@%h", "-l", loglevel, *args],
            env=base, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextlib.contextmanager
def service_dir() -> Iterator[Path]:
    """A private temp dir for a test's own PostgreSQL or Redis. Not under pytest's ``tmp_path``:
    the embedded PostgreSQL runs as another user (the tests run as root), and a pytest run that
    starts meanwhile resets ``/tmp/pytest-of-<user>`` to mode 0700, locking that user out."""
    path = Path(tempfile.mkdtemp(prefix="warden-own-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
