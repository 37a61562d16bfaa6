"""The real stack the chaos suite breaks: embedded PostgreSQL and Redis it can stop, restart and
freeze, the API under gunicorn, the outbox relay, celery beat, and ``celery worker`` processes
started as the Procfile starts them, all on this machine, plus the fake LLM (tests/fakes/llm.py)
that the workers reach through the official OpenAI SDK (``OPENAI_BASE_URL``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = ("succeeded", "blocked", "error", "cancelled")


class Proc:
    """One process of the stack, in its own session, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._log.close()
        return True

    def stop(self, grace: float = 15.0) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            if not self.wait(grace):
                self.kill_group()
                self.wait(10)
        else:
            self._log.close()
        self.kill_group()  # whatever the process left behind in its group (a pool child) goes too

    def tail(self, n: int = 3000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]

    def rss(self) -> int:
        """Resident set size in bytes (the process and any pool children it has)."""
        import psutil

        p = psutil.Process(self.pid)
        return int(p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True)))


class Stack:
    def __init__(self, *, lease_s: float = 5.0, time_limit_s: int = 30, log: Any = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="warden-chaos-"))
        self.lease_s = lease_s
        self.time_limit_s = time_limit_s
        self.procs: list[Proc] = []
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._worker_no = 0

    # -- services -------------------------------------------------------------------------------
    def start(self) -> Stack:
        from shared.db import Database
        from shared.migrate import migrate
        from tests.fakes.llm import FakeLLM
        from warden.services import EmbeddedPostgres, EmbeddedRedis, free_port

        self.pg = EmbeddedPostgres(self.tmp / "pgdata")
        self.database_url = self.pg.start("warden_chaos")
        migrate(self.database_url)
        # Redis with its append-only file, as a broker that keeps queued messages across a restart.
        self.redis = EmbeddedRedis(self.tmp / "redis", persist=True)
        self.redis_url = self.redis.start()
        self.fake = FakeLLM()
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("WARDEN_", "CELERY_"))}
        self.env.update({
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, "WARDEN_SECRET_KEY": "chaos",
            "WARDEN_ALLOW_PRIVATE_WEBHOOKS": "1", "WARDEN_LOG_LEVEL": "WARNING", "WARDEN_LOG_JSON": "0",
            "WARDEN_RATE_LIMIT_PER_S": "1000000", "WARDEN_RATE_LIMIT_BURST": "1000000",
            "WARDEN_OUTBOX_SWEEP_S": "1", "WARDEN_LEASE_S": str(self.lease_s),
            "WARDEN_EXECUTIONS_TIME_LIMIT_S": str(self.time_limit_s),
            "WARDEN_VISIBILITY_TIMEOUT_S": str(self.time_limit_s + 15),
            "WARDEN_REQUEUE_QUEUED_S": "600", "WARDEN_AUTH_CACHE_S": "5",
            "OPENAI_BASE_URL": self.fake.url + "/v1", "OPENAI_API_KEY": "sk-chaos-not-real",
            "WARDEN_BEAT_SCHEDULE": str(self.tmp / "beat-schedule"),
            "PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORT": str(self.port), "WEB_CONCURRENCY": "2",
        })
        self.env.pop("WARDEN_SIGNING_KEY", None)
        self.db = Database(self.database_url, maxconn=8)
        self.api = self.start_api()
        self.relay = self.spawn("relay", [str(BIN / "warden"), "relay"])
        self.beat = self.spawn("beat", [sys.executable, "-m", "celery", "-A", "workers.main", "beat", "-l", "WARNING",
                                        "--schedule", str(self.tmp / "beat-schedule")])
        # Deliveries, and maintenance (outbox sweep, requeue of runs under an expired lease) on its own queue.
        self.delivery = self.spawn("delivery", [sys.executable, "-m", "celery", "-A", "workers.main", "worker",
                                                "-Q", "delivery,maintenance", "-n", "delivery@%h", "--concurrency", "1",
                                                "--without-mingle", "--without-gossip", "-l", "INFO"])
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop(10)
        with contextlib.suppress(Exception):
            self.fake.stop()
        with contextlib.suppress(Exception):
            self.db.close()
        with contextlib.suppress(Exception):
            self.redis_resume()
            self.redis.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()
        if os.environ.get("WARDEN_CHAOS_KEEP"):
            self.log(f"chaos: logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, name: str, cmd: list[str], **env: str) -> Proc:
        p = Proc(name, cmd, {**self.env, **env}, self.tmp)
        self.procs.append(p)
        return p

    def start_api(self) -> Proc:
        api = self.spawn("api", [str(BIN / "gunicorn"), "-c", str(ROOT / "api" / "gunicorn_conf.py"),
                                 "api.app:create_app()"])
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code < 500:
                    return api
            except requests.RequestException:
                pass
            if not api.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start:\n{api.tail()}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker(self, concurrency: int = 100, prefetch: int = 1, **env: str) -> Proc:
        """An executions worker as the Procfile starts one (gevent pool)."""
        self._worker_no += 1
        name = f"executions{self._worker_no}"
        return self.spawn(name, [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-Q", "executions",
                                 "-n", f"{name}@%h", "-P", "gevent", "--concurrency", str(concurrency),
                                 "--prefetch-multiplier", str(prefetch), "--without-mingle", "--without-gossip",
                                 "-l", "WARNING"], **env)

    def redis_restart(self) -> None:
        """Stop Redis (SIGTERM: it writes its append-only file) and start it again on its port."""
        self.redis.stop()
        self._redis_again()

    def _redis_again(self) -> None:
        """redis-server on the same port as before (EmbeddedRedis.start would pick another one while
        the old port's connections linger in TIME_WAIT; Redis itself binds with SO_REUSEADDR)."""
        from warden.services import redis_server_binary

        d = self.redis.data_dir
        self.redis.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.redis.port), "--bind", "127.0.0.1", "--dir", str(d),
             "--save", "", "--appendonly", "yes", "--protected-mode", "no", "--logfile", str(d / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.redis_client().ping()
                return
            except Exception:
                if self.redis.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start again") from None
                time.sleep(0.05)

    def redis_pause(self) -> None:
        assert self.redis.proc is not None
        os.kill(self.redis.proc.pid, signal.SIGSTOP)

    def redis_resume(self) -> None:
        if self.redis.proc is not None:
            os.kill(self.redis.proc.pid, signal.SIGCONT)

    def redis_client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    # -- clients --------------------------------------------------------------------------------
    def workspace(self, name: str) -> str:
        """A fresh workspace; returns its API key."""
        import secrets

        from shared.store import workspaces

        ws = workspaces.get_or_create_workspace(self.db, f"chaos-{name}-{secrets.token_hex(3)}")
        return workspaces.create_key(self.db, ws.id)

    def submit_many(self, key: str, n: int, *, model: str, threads: int = 8, task: str = "Email ops the report",
                    permissions: tuple[str, ...] = ("email:send",)) -> list[str]:
        local = threading.local()

        def one(i: int) -> str:
            s = getattr(local, "s", None)
            if s is None:
                s = local.s = requests.Session()
            r = s.post(f"{self.url}/api/v1/tasks", json={"task": f"{task} #{i}", "provider": "openai", "model": model,
                                                         "permissions": list(permissions)},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
            if r.status_code != 201:
                raise RuntimeError(f"submission refused: {r.status_code} {r.text[:300]}")
            return str(r.json()["execution_id"])

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(n)))

    # -- the database's view ----------------------------------------------------------------------
    def statuses(self, ids: list[str]) -> dict[str, str]:
        rows = self.db.fetchall("SELECT id, status FROM executions WHERE id = ANY(%s)", (ids,))
        return {r["id"]: r["status"] for r in rows}

    def count(self, ids: list[str], *statuses: str) -> int:
        return int(self.db.fetchone("SELECT count(*) AS n FROM executions WHERE id = ANY(%s) AND status = ANY(%s)",
                                    (ids, list(statuses)))["n"])

    def wait_terminal(self, ids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(ids, *TERMINAL) == len(ids):
                return True
            time.sleep(0.25)
        return False

    def twice(self, ids: list[str], *, emails: int = 1, certificates: int = 1) -> dict[str, int]:
        """Runs that did something more than once: an email sent twice, a certificate too many, two
        terminal events, two starts, or a hole in their events' seq."""
        q = {
            "emails": ("SELECT count(*) AS n FROM (SELECT execution_id FROM email_outbox WHERE execution_id = ANY(%s)"
                       " GROUP BY execution_id HAVING count(*) > %s) x", (ids, emails)),
            "certificates": ("SELECT count(*) AS n FROM (SELECT execution_id FROM certificates WHERE execution_id ="
                             " ANY(%s) GROUP BY execution_id HAVING count(*) > %s) x", (ids, certificates)),
            "terminal_events": ("SELECT count(*) AS n FROM (SELECT execution_id FROM execution_events WHERE"
                                " execution_id = ANY(%s) AND type = ANY(%s) GROUP BY execution_id"
                                " HAVING count(*) > 1) x", (ids, [f"execution.{s}" for s in TERMINAL])),
            "started_events": ("SELECT count(*) AS n FROM (SELECT execution_id FROM execution_events WHERE"
                               " execution_id = ANY(%s) AND type = 'execution.started' GROUP BY execution_id"
                               " HAVING count(*) > 1) x", (ids, )),
            "event_gaps": ("SELECT count(*) AS n FROM (SELECT execution_id FROM execution_events WHERE"
                           " execution_id = ANY(%s) GROUP BY execution_id"
                           " HAVING min(seq) <> 1 OR max(seq) <> count(*)) x", (ids, )),
        }
        return {k: int(self.db.fetchone(sql, args)["n"]) for k, (sql, args) in q.items()}

    def emails_sent(self, ids: list[str]) -> int:
        return int(self.db.fetchone("SELECT count(DISTINCT execution_id) AS n FROM email_outbox"
                                    " WHERE execution_id = ANY(%s)", (ids,))["n"])

    def diagnose(self, tail: int = 1500) -> str:
        """For a failed case: which of the stack's processes are alive, where the runs stand, and
        the end of each log of a process still in the stack or that died."""
        lines = ["processes: " + ", ".join(f"{p.name}={'up' if p.alive() else 'exited'}" for p in self.procs)]
        with contextlib.suppress(Exception):
            rows = self.db.fetchall("SELECT status, count(*) AS n, count(*) FILTER (WHERE status = 'running'"
                                    " AND lease_expires_at < now()) AS expired FROM executions GROUP BY status")
            lines.append("runs: " + ", ".join(f"{r['status']} {r['n']}" + (f" ({r['expired']} lease expired)"
                                                                           if r["expired"] else "") for r in rows))
        with contextlib.suppress(Exception):
            r = self.redis_client()
            lines.append(f"broker: executions {r.llen('executions')}, maintenance {r.llen('maintenance')},"
                         f" unacked {r.hlen('unacked')}")
        lines += stuck_runs_report(self.db)
        with contextlib.suppress(Exception):
            lines += broker_report(self.redis_client())
        # The stack's own processes first (the maintenance sweep logs in delivery.log), then the
        # end of the logs of a few workers that died.
        own = [p for p in self.procs if p.name in ("beat", "delivery", "relay")]
        dead = [p for p in self.procs if p.name not in ("beat", "delivery", "relay") and not p.alive()]
        for p in [*own, *dead[-4:]]:
            with contextlib.suppress(Exception):
                lines.append(f"--- {p.name}.log (end) ---\n{p.tail(tail)}")
        return "\n".join(lines)

    def resumed(self, ids: list[str]) -> int:
        return int(self.db.fetchone("SELECT count(DISTINCT execution_id) AS n FROM execution_events WHERE"
                                    " execution_id = ANY(%s) AND type = 'execution.resumed'", (ids,))["n"])


def stuck_runs_report(db: Any) -> list[str]:
    """Where queued runs stand, for a failure that left some queued: each one's age and last
    touch, the pending outbox rows, and the sessions holding a lock on an execution row or
    sitting in an open transaction (a run no message can claim is skipped by FOR UPDATE SKIP
    LOCKED)."""
    queries = (
        ("queued run", "SELECT id, workspace_id, cancel_requested, deliveries, lease_token,"
                       " round(extract(epoch FROM now() - created_at)) AS age_s,"
                       " round(extract(epoch FROM now() - updated_at)) AS touched_s_ago"
                       " FROM executions WHERE status = 'queued' ORDER BY id LIMIT 10"),
        ("outbox pending", "SELECT id, task_name, args, queue, attempts, last_error,"
                           " round(extract(epoch FROM now() - created_at)) AS age_s,"
                           " round(extract(epoch FROM publish_after - now())) AS publish_after_in_s"
                           " FROM outbox WHERE dispatched_at IS NULL ORDER BY id LIMIT 10"),
        ("open transaction", "SELECT a.pid, a.application_name, a.state, a.wait_event_type,"
                             " round(extract(epoch FROM now() - a.xact_start)) AS xact_s, left(a.query, 120) AS query"
                             " FROM pg_stat_activity a WHERE a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL"
                             " AND (a.state LIKE 'idle in transaction%%'"
                             " OR a.xact_start < now() - interval '5 seconds') LIMIT 10"),
    )
    lines: list[str] = []
    for label, sql in queries:
        with contextlib.suppress(Exception):
            lines += [f"{label}: " + ", ".join(f"{k}={v}" for k, v in r.items()) for r in db.fetchall(sql)]
    return lines


def broker_report(client: Any) -> list[str]:
    """The Redis broker's side, for the same failure: run-queue lengths, and each message
    delivered and not acknowledged (kombu's ``unacked`` hash): its queue, task, arguments and age;
    and kombu's restore mutex, which holds back the return of unacknowledged messages while set."""
    from shared.kombu_redis import held_messages

    lines: list[str] = []
    with contextlib.suppress(Exception):
        queued, delivered = held_messages(client, "executions")
        lines.append(f"broker: executions queued {queued}; unacked {client.hlen('unacked')};"
                     f" unacked_mutex ttl {client.ttl('unacked_mutex')}")
        lines += [f"unacked: queue={d.queue} task={d.task} args={d.args} age_s={round(d.age_s)}"
                  for d in delivered[:20]]
    return lines
