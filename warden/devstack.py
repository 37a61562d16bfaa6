"""``warden dev``: everything a fresh machine needs, supervised in one terminal.

Starts embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set, migrates, provisions
the dev workspace and API key, then runs every Procfile process with prefixed logs (honcho)
until Ctrl-C or SIGTERM, and stops all of it, embedded services included.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from warden.services import ServiceSet


class _Stopped(Exception):
    """SIGTERM before the processes were up (SIGINT arrives as KeyboardInterrupt)."""


def _terminate(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


# Library warnings a person running `make run` can do nothing about: platformdirs without an
# XDG_RUNTIME_DIR (containers, CI), and Celery's running-as-root warning (a container's user).
# Set for the dev stack only; `python -W` / PYTHONWARNINGS given by the user still apply after.
_QUIET = ("ignore:XDG_RUNTIME_DIR is not set", "ignore:You're running the worker with superuser privileges")
# The longest Unix socket path (sun_path is 108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100


def executions_processes(env: dict[str, str] | os._Environ[str]) -> int:
    """How many ``executions`` workers ``make run`` starts: ``WARDEN_EXECUTIONS_PROCESSES``, by
    default one per CPU core. A gevent worker is one process on one core; a run costs it some
    milliseconds of CPU (its SDK calls, guard checks, writes), so a thousand runs starting at
    once keep one core busy, and one worker per core uses the host."""
    raw = env.get("WARDEN_EXECUTIONS_PROCESSES", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"WARDEN_EXECUTIONS_PROCESSES must be a whole number of at least 1, not {raw!r}")
        return int(raw)
    return max(1, os.cpu_count() or 1)


def procfile_processes(root: Path, env: dict[str, str] | os._Environ[str]) -> list[tuple[str, str, dict[str, str]]]:
    """The Procfile's processes as ``make run`` starts them: (name, command, extra environment).
    The ``executions`` line runs :func:`executions_processes` times, each copy with its own node
    name (``WARDEN_EXECUTIONS_NODE``: executions1, executions2, …) so that ``celery inspect`` and
    the fleet tell them apart."""
    out: list[tuple[str, str, dict[str, str]]] = []
    for name, cmd in read_procfile(root / "Procfile"):
        copies = executions_processes(env) if name == "executions" else 1
        if copies == 1:
            out.append((name, cmd, {}))
        else:
            out += [(f"{name}{i}", cmd, {"WARDEN_EXECUTIONS_NODE": f"{name}{i}"}) for i in range(1, copies + 1)]
    return out


def read_procfile(path: Path) -> list[tuple[str, str]]:
    from honcho.environ import parse_procfile

    return [(name, cmd) for name, cmd in parse_procfile(path.read_text()).processes.items()]


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)  # a file that existed keeps its mode through O_CREAT


def _persistent(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    _write_private(path, make)
    return make


# What a running ``warden dev`` tells the other commands run from the same checkout (create-key,
# revoke-key, migrate, rotate-signing-key): where its services are. Written while it runs.
DEV_ENV = Path(".warden") / "dev.env"
DEV_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "WARDEN_SECRET_KEY")


def with_dev_stack(environ: Mapping[str, str], root: Path) -> Mapping[str, str]:
    """``environ`` with what it leaves unset of ``DEV_ENV_NAMES`` taken from a running dev stack's
    ``.warden/dev.env`` under ``root``: ``warden create-key`` in a second terminal reaches the
    embedded PostgreSQL that ``make run`` started. The environment always wins."""
    path = root / DEV_ENV
    if all(name in environ for name in DEV_ENV_NAMES) or not path.is_file() or not dev_stack_running(root):
        return environ
    env = dict(environ)
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name in DEV_ENV_NAMES:
            env.setdefault(name, value)
    return env


def dev_stack_running(root: Path) -> bool:
    """Whether a ``warden dev`` holds this checkout's lock now (a dev.env left by one that was
    killed is not a running stack: its services are gone)."""
    lock = root / ".warden" / "dev.lock"
    if not lock.is_file():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def hold_checkout(base: Path) -> IO[str] | None:
    """The lock that makes ``warden dev`` one per checkout (its ``.warden`` data, services and
    dev.env), or None when another holds it. Held until the file is closed or the process ends."""
    handle = open(base / "dev.lock", "w")  # noqa: SIM115 - held for the life of the dev stack
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_dev(root: Path, *, port: int = 8000) -> int:
    """Run the dev stack until Ctrl-C or SIGTERM; 0 when stopped so (``make`` then adds no
    ``Error 130``), else the status of the first process that ended on its own."""
    import warnings

    for spec in _QUIET:
        warnings.filterwarnings("ignore", message=spec.split(":", 1)[1])
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run_dev(root, port)
    except (KeyboardInterrupt, _Stopped):
        print("\n  stopped", flush=True)
        return 0


def _run_dev(root: Path, port: int) -> int:
    from honcho.manager import SIGNALS, Manager
    from honcho.printer import Printer

    from shared.config import load_settings
    from shared.db import Database
    from shared.migrate import ensure_database, migrate
    from shared.store import workspaces

    given_key = os.environ.get("WARDEN_DEV_API_KEY", "").strip()
    if given_key and (problem := workspaces.plain_key_problem(given_key)):
        print(f"warden dev: WARDEN_DEV_API_KEY: {problem}", file=sys.stderr, flush=True)
        return 2
    try:
        executions_processes(os.environ)
    except ValueError as exc:
        print(f"warden dev: {exc}", file=sys.stderr, flush=True)
        return 2
    base = root / ".warden"
    base.mkdir(exist_ok=True)
    lock = hold_checkout(base)
    if lock is None:
        print("warden dev is already running in this checkout: use that one, or stop it (Ctrl-C in its"
              " terminal) first", file=sys.stderr)
        return 1
    services = ServiceSet(base)
    env = dict(os.environ)
    try:
        env.update(services.start(env))
        env.setdefault("WARDEN_SECRET_KEY", _persistent(base / "secret-key", secrets.token_urlsafe(32)))
        for name, value in dev_defaults(base).items():
            env.setdefault(name, value)
        env["PYTHONWARNINGS"] = ",".join(filter(None, [*_QUIET, os.environ.get("PYTHONWARNINGS")]))
        env["PORT"] = str(port)
        prom = base / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        dev_env = root / DEV_ENV
        _write_private(dev_env, "".join(f"{name}={env[name]}\n" for name in DEV_ENV_NAMES if name in env))
        settings = load_settings(env)
        if created := ensure_database(settings.database_url):
            print(f"  created database {created}", flush=True)
        migrate(settings.database_url)
        db = Database(settings.database_url, maxconn=2)
        ws = workspaces.get_or_create_workspace(db, "dev")
        key_file = base / "dev-api-key"
        key = env.get("WARDEN_DEV_API_KEY", "").strip() or (key_file.read_text().strip() if key_file.exists() else None)
        try:
            key = workspaces.create_key(db, ws.id, name="dev", plain=key)
        except ValueError as exc:  # a WARDEN_DEV_API_KEY of another shape, or taken: one line, no traceback
            print(f"warden dev: WARDEN_DEV_API_KEY: {exc}", file=sys.stderr, flush=True)
            db.close()
            return 2
        _write_private(key_file, key + "\n")
        db.close()

        print(f"\n  Warden API  http://127.0.0.1:{port}   docs http://127.0.0.1:{port}/api/v1/docs/")
        print(f"  dev API key {key}   (saved in .warden/dev-api-key)")
        for line in services.described:
            print(f"  {line}")
        n = executions_processes(env)
        print(f"  {n} executions worker{'s' * (n != 1)} (one per core; WARDEN_EXECUTIONS_PROCESSES), each holding"
              f" up to {env.get('WARDEN_EXECUTIONS_CONCURRENCY', '1000')} runs")
        print("  Ctrl-C stops everything; data stays in .warden/ for the next `make run`\n", flush=True)

        manager = Manager(Printer(sys.stdout))
        for name, cmd, extra in procfile_processes(root, env):
            manager.add_process(name, cmd, env={**env, **extra}, cwd=str(root))
        manager.loop()
        stopped = {info["rc"] for info in SIGNALS.values()}
        return 0 if manager.returncode in stopped else int(manager.returncode or 0)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        (root / DEV_ENV).unlink(missing_ok=True)
        services.stop()
        lock.close()


def dev_defaults(base: Path) -> dict[str, str]:
    """What ``make run`` sets unless the environment does (README's configuration table says so):
    readable logs with one access-log line per request, private webhook targets allowed, and
    beat's schedule and gunicorn's control socket inside this checkout's ``.warden/``."""
    control = base.resolve() / "gunicorn.ctl"
    return {
        "WARDEN_ALLOW_PRIVATE_WEBHOOKS": "1",
        "WARDEN_LOG_JSON": "0",
        "WARDEN_ACCESS_LOG": "1",
        "WARDEN_BEAT_SCHEDULE": str(base / "celerybeat-schedule"),
        # Off when the path is too long for a Unix socket (a deep checkout).
        "WARDEN_GUNICORN_CONTROL_SOCKET": str(control) if len(str(control)) <= _MAX_SOCKET_PATH else "",
    }
