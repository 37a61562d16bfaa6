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


# The servers each services() block started, by its DATABASE_URL (see service_pids).
_STARTED_PIDS: dict[str, dict[str, int]] = {}


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """Yields an environment with DATABASE_URL (a fresh database) and REDIS_URL."""
    from shared.migrate import create_database, migrate
    from warden.services import ServiceSet

    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    svc = ServiceSet(tmp, persist=False)
    env = dict(os.environ)
    made: tuple[str, str] | None = None  # (admin URL, name): a database of ours on the user's server
    try:
        env.update(svc.start(env, database="warden_bench"))
        if os.environ.get("DATABASE_URL"):
            parts = urlsplit(env["DATABASE_URL"])
            name = f"warden_bench_{secrets.token_hex(3)}"
            create_database(env["DATABASE_URL"], name)
            made = (env["DATABASE_URL"], name)
            env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
        migrate(env["DATABASE_URL"])
        _STARTED_PIDS[env["DATABASE_URL"]] = svc.pids()
        env.update({"WARDEN_LOG_LEVEL": "WARNING", "WARDEN_ALLOW_PRIVATE_WEBHOOKS": "1",
                    "WARDEN_SECRET_KEY": "bench", "WARDEN_RATE_LIMIT_PER_S": "1000000",
                    "WARDEN_RATE_LIMIT_BURST": "1000000", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
        yield env
    finally:
        _STARTED_PIDS.pop(env.get("DATABASE_URL", ""), None)
        if made is not None:
            _drop_database(*made)
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_database(admin_url: str, name: str) -> None:
    """Drop a benchmark's database from the user's server (``DATABASE_URL``): each run makes its
    own, and they would otherwise pile up there."""
    from shared.migrate import drop_database

    try:
        drop_database(admin_url, name)
    except Exception as exc:  # noqa: BLE001 - the benchmark's figures stand; say what was left behind
        print(f"bench: could not drop database {name}: {exc}".strip(), file=sys.stderr)


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
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL what is left of it after ``grace_s``.
    The whole group, not the leader alone: for a line like ``a & b & wait`` the shell exits at
    once and its background workers (Celery's warm shutdown) may not, and a worker left behind
    keeps retrying its broker's port, which a later stack may reuse."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    deadline = time.monotonic() + grace_s
    while True:
        proc.poll()  # reap the leader, so that it does not keep the group alive as a zombie
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            break
        time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
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


def procfile_command(name: str, environ: dict[str, str] | None = None) -> str:
    """The shell command line the Procfile gives process ``name`` (run by ``sh -c``, as honcho does
    for ``make run``, so its ``${VAR:-default}`` expansions follow the environment).

    ``BENCH_EXECUTIONS_WORKER`` in the environment replaces the ``executions`` line: a benchmark
    of another pool or concurrency without editing the Procfile."""
    env = os.environ if environ is None else environ
    if name == "executions" and env.get("BENCH_EXECUTIONS_WORKER"):
        return env["BENCH_EXECUTIONS_WORKER"]
    from warden.devstack import read_procfile

    for proc, cmd in read_procfile(ROOT / "Procfile"):
        if proc == name:
            return cmd
    raise KeyError(f"no {name!r} process in the Procfile")


def worker_command(app: str = "workers.main", queue: str = "executions", node: str = "executions",
                   log_level: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The Procfile's executions worker line (pool, concurrency, prefetch, child recycling as
    shipped) with another app, queue, node name or log level: the bare Celery peer of a benchmark
    runs under exactly the settings of ours."""
    tokens = procfile_command("executions", environ).split()
    replace = {"-A": app, "--app": app, "-Q": queue, "--queues": queue, "-n": f"{node}@%h",
               "--hostname": f"{node}@%h"}
    if log_level:
        replace.update({"-l": log_level, "--loglevel": log_level})
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name, eq, _ = tok.partition("=")
        if eq and name in replace:
            out.append(f"{name}={replace[name]}")
            seen.add(name)
        elif tok in replace and i + 1 < len(tokens):
            out += [tok, replace[tok]]
            seen.add(tok)
            i += 1
        else:
            out.append(tok)
        i += 1
    if log_level and not seen & {"-l", "--loglevel"}:
        out += ["-l", log_level]
    return " ".join(out)


def expand(cmd: str, env: dict[str, str]) -> str:
    """``cmd`` with its ``${VAR:-default}`` expansions done as ``sh -c`` would do them in ``env``."""
    return subprocess.run(["/bin/sh", "-c", f"echo {cmd}"], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def service_pids(env: dict[str, str]) -> dict[str, int]:
    """The root pids of the PostgreSQL and Redis servers :func:`services` started for ``env``
    (embedded); empty for the user's own servers (``DATABASE_URL``, ``REDIS_URL``)."""
    return dict(_STARTED_PIDS.get(env.get("DATABASE_URL", ""), {}))


def shell(cmd: str, env: dict[str, str], **kw: object) -> contextlib.AbstractContextManager[subprocess.Popen]:
    """Run a Procfile-style command line through ``sh -c`` (in its own process group)."""
    return process(["/bin/sh", "-c", cmd], env, **kw)  # type: ignore[arg-type]


class ProcessTree:
    """Resident memory and CPU time of a process and its descendants, read from /proc.

    ``cpu_s`` counts each process's user+system time plus that of its children it has reaped
    (a prefork pool replaces children: their CPU stays counted in the parent)."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    _PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid

    @classmethod
    def children(cls) -> dict[int, list[int]]:
        """Every process's children (one scan of /proc)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = cls._stat(int(entry))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry))
        return children

    def pids(self, children: dict[int, list[int]] | None = None) -> list[int]:
        children = self.children() if children is None else children
        out, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except OSError:
            return None
        return text[text.rfind(")") + 2:].split()

    def sample(self, children: dict[int, list[int]] | None = None) -> tuple[float, float]:
        """(resident MiB, CPU seconds) over the tree right now (``children``: a scan of /proc
        already made, see :meth:`children`)."""
        rss = cpu = 0.0
        for pid in self.pids(children):
            st = self._stat(pid)
            if not st:
                continue
            # after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
            # utime(11) stime(12) cutime(13) cstime(14) … rss(21)
            cpu += sum(int(x) for x in st[11:15]) / self.TICK
            rss += int(st[21]) * self._PAGE / (1 << 20)
        return rss, cpu
