"""What the fleet tests and ``bench/bench_fleet.py`` do with a fleet: submit scripted slow runs,
wait for them, and count from the database what each run did and which host did it.

Every execution event written by a worker carries ``data.worker = {"host", "pid"}`` (host:
WARDEN_HOSTNAME, else the machine's name), so the events say where a run started and where it
resumed.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tests.fleet.harness import ADDRESSES, API_HOSTS, Fleet
from tests.support import ApiClient

TERMINAL = ("succeeded", "blocked", "error", "cancelled")
PERMISSIONS = ["fs:read", "fs:write", "email:send"]


def script_model(fleet: Fleet, delay: float) -> str:
    """A model that emails, then writes a document, then answers; each answer after ``delay``
    seconds. A run of it makes three model calls and issues two certificates and one email."""
    model = f"fleet-{secrets.token_hex(4)}"
    fleet.llm.script(model, [
        {"calls": [("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})],
         "delay": delay},
        {"calls": [("write_document", {"name": "report", "content": "All good."})], "delay": delay},
        {"text": "Emailed and saved.", "delay": delay},
    ])
    return model


def submit(client: ApiClient, model: str, **extra: Any) -> str:
    r = client.post("/api/v1/tasks", json={"task": "Email and save the report", "provider": "openai",
                                           "model": model, "permissions": PERMISSIONS, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["execution_id"])


def submit_many(fleet: Fleet, model: str, n: int, *, key: str | None = None, threads: int = 8) -> list[str]:
    """``n`` submissions spread evenly over both API hosts, ``threads`` at a time."""
    clients = [fleet.api(h, key) for h in API_HOSTS]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda i: submit(clients[i % len(clients)], model), range(n)))


def statuses(fleet: Fleet, ids: list[str]) -> dict[str, str]:
    rows = fleet.db.fetchall("SELECT id, status FROM executions WHERE id = ANY(%s)", (ids,))
    return {r["id"]: r["status"] for r in rows}


def wait_terminal(fleet: Fleet, ids: list[str], timeout: float) -> float:
    """Wait until every one of ``ids`` is terminal; the seconds it took. On timeout, says how
    many are left in which state."""
    start = time.monotonic()
    while True:
        st = statuses(fleet, ids)
        left = {i: s for i, s in st.items() if s not in TERMINAL}
        if not left and len(st) == len(ids):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            import redis as redis_lib

            from bench.chaos_stack import broker_report, stuck_runs_report

            broker = broker_report(redis_lib.Redis.from_url(fleet.redis_url, socket_timeout=5))
            raise AssertionError(f"{len(left)} of {len(ids)} runs not terminal after {timeout:.0f}s: "
                                 f"{dict(Counter(left.values()))}; e.g. {list(left)[:3]}\n"
                                 + "\n".join(stuck_runs_report(fleet.db) + broker))
        time.sleep(0.25)


@dataclass
class RunRecord:
    id: str
    status: str
    error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    certificates: int = 0
    emails: int = 0

    @property
    def hosts(self) -> list[str]:
        """The worker hosts that wrote its events, in order, each once per stretch."""
        out: list[str] = []
        for ev in self.events:
            host = (ev["data"].get("worker") or {}).get("host")
            if host and (not out or out[-1] != host):
                out.append(host)
        return out

    @property
    def started_on(self) -> str | None:
        for ev in self.events:
            if ev["type"] == "execution.started":
                return (ev["data"].get("worker") or {}).get("host")
        return None

    @property
    def finished_on(self) -> str | None:
        ev = self.events[-1] if self.events else None
        return (ev["data"].get("worker") or {}).get("host") if ev and ev["type"] in TERMINAL_EVENTS else None


TERMINAL_EVENTS = tuple(f"execution.{s}" for s in TERMINAL)


def records(fleet: Fleet, ids: list[str]) -> dict[str, RunRecord]:
    """Everything the database holds about these runs, read back at once."""
    recs = {r["id"]: RunRecord(r["id"], r["status"], r["error"]) for r in fleet.db.fetchall(
        "SELECT id, status, error FROM executions WHERE id = ANY(%s)", (ids,))}
    for ev in fleet.db.fetchall("SELECT execution_id, seq, type, at, data FROM execution_events"
                                " WHERE execution_id = ANY(%s) ORDER BY execution_id, seq", (ids,)):
        recs[ev["execution_id"]].events.append(ev)
    for r in fleet.db.fetchall("SELECT execution_id, count(*) AS n FROM certificates WHERE execution_id = ANY(%s)"
                               " GROUP BY execution_id", (ids,)):
        recs[r["execution_id"]].certificates = r["n"]
    for r in fleet.db.fetchall("SELECT execution_id, count(*) AS n FROM email_outbox WHERE execution_id = ANY(%s)"
                               " GROUP BY execution_id", (ids,)):
        recs[r["execution_id"]].emails = r["n"]
    return recs


CUT_OFF_CODES = ("provider_unavailable", "time_limit_exceeded")


def exactly_once_problems(recs: dict[str, RunRecord], ids: list[str], *,
                          may_fail: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """What is wrong with the scripted runs (empty when each ran once to one result): missing,
    not succeeded, events with a gap or a second terminal, a certificate or email twice. Runs in
    ``may_fail`` may instead end `error` because their host lost its network mid-run (code
    provider_unavailable or time_limit_exceeded), still once, with no certificate or email twice."""
    problems = []
    for i in ids:
        r = recs.get(i)
        if r is None:
            problems.append(f"{i}: lost (no row)")
            continue
        seqs = [e["seq"] for e in r.events]
        types = [e["type"] for e in r.events]
        terminals = [t for t in types if t in TERMINAL_EVENTS]
        failed_ok = i in may_fail and r.status == "error" and (r.error or {}).get("code") in CUT_OFF_CODES
        if r.status != "succeeded" and not failed_ok:
            problems.append(f"{i}: {r.status} {r.error}, hosts {r.hosts}, events {types}")
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{i}: events not gapless: {seqs}")
        if len(terminals) != 1 or types[-1] != terminals[0] or terminals[0] != f"execution.{r.status}":
            problems.append(f"{i}: status {r.status}, terminal events {terminals}")
        want_certs, want_emails = (2, 1) if r.status == "succeeded" else (min(r.certificates, 2), min(r.emails, 1))
        if types.count("certificate.issued") != r.certificates or r.certificates != want_certs:
            problems.append(f"{i}: {types.count('certificate.issued')} certificate events, "
                            f"{r.certificates} certificates (want {want_certs})")
        if r.emails != want_emails:
            problems.append(f"{i}: {r.emails} emails (want {want_emails})")
    return problems


def worker_problems(recs: dict[str, RunRecord]) -> list[str]:
    """Events from execution.started on must name the worker host and process that wrote them."""
    problems = []
    for r in recs.values():
        started = False
        for ev in r.events:
            started = started or ev["type"] == "execution.started"
            worker = ev["data"].get("worker")
            if started and not (isinstance(worker, dict) and worker.get("host") and isinstance(worker.get("pid"), int)):
                problems.append(f"{r.id} seq {ev['seq']} {ev['type']}: data.worker = {worker!r}")
                break
    return problems


def held_by(fleet: Fleet, host: str, ids: list[str]) -> list[str]:
    """Runs among ``ids`` that are running now and were last written by ``host``."""
    rows = fleet.db.fetchall(
        "SELECT DISTINCT ON (e.id) e.id, ev.data -> 'worker' ->> 'host' AS host FROM executions e"
        " JOIN execution_events ev ON ev.execution_id = e.id"
        " WHERE e.id = ANY(%s) AND e.status = 'running' ORDER BY e.id, ev.seq DESC", (ids,))
    return [r["id"] for r in rows if r["host"] == host]


def last_terminal_at(fleet: Fleet, ids: list[str]) -> float:
    """The latest terminal event time among ``ids`` (epoch seconds, PostgreSQL's clock)."""
    row = fleet.db.fetchone("SELECT extract(epoch FROM max(at)) AS t FROM execution_events"
                            " WHERE execution_id = ANY(%s) AND type = ANY(%s)", (ids, list(TERMINAL_EVENTS)))
    return float(row["t"])


def db_now(fleet: Fleet) -> float:
    return float(fleet.db.fetchone("SELECT extract(epoch FROM clock_timestamp()) AS t")["t"])


def host_counts(recs: dict[str, RunRecord]) -> dict[str, int]:
    return dict(sorted(Counter(r.started_on or "?" for r in recs.values()).items()))


def by_host(recs: dict[str, RunRecord]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for r in recs.values():
        out[r.started_on or "?"].append(r.id)
    return dict(out)


def kill_and_recover(fleet: Fleet, victim: str, model: str, n: int, *, min_held: int,
                     timeout: float, cut_link: bool = True) -> tuple[list[str], list[str], float]:
    """Submit ``n`` runs, wait until ``victim`` holds at least ``min_held`` of them mid-run, kill
    the host (link down, every process SIGKILLed; with ``cut_link=False`` only the processes)
    and wait for all ``n`` to end. Returns (all
    ids, the ids the victim held, recovery seconds: from the kill to the last of the held runs'
    terminal event)."""
    ids = submit_many(fleet, model, n)
    deadline = time.monotonic() + 60
    while len(held := held_by(fleet, victim, ids)) < min_held:
        if time.monotonic() > deadline:
            rows = fleet.db.fetchall("SELECT e.status, ev.data -> 'worker' ->> 'host' AS host, count(*) AS n"
                                     " FROM executions e JOIN execution_events ev ON ev.execution_id = e.id"
                                     " AND ev.seq = e.event_count WHERE e.id = ANY(%s) GROUP BY 1, 2", (ids,))
            raise AssertionError(f"{victim} never held {min_held} runs (holds {len(held)}); runs by status and "
                                 f"last host: {[(r['status'], r['host'], r['n']) for r in rows]}")
        time.sleep(0.1)
    killed_at = db_now(fleet)
    if cut_link:
        fleet.kill_host(victim)
    else:  # only the processes die: their kernel still closes their connections
        fleet.hosts[victim].kill()
    try:
        wait_terminal(fleet, held, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; PostgreSQL still holds {pg_backends(fleet, victim)} connection(s) from "
                             f"the dead {victim}") from None
    recovery = last_terminal_at(fleet, held) - killed_at
    wait_terminal(fleet, ids, timeout)
    return ids, held, recovery


def pg_backends(fleet: Fleet, host: str) -> int:
    """PostgreSQL sessions whose client is ``host`` (a dead host's stay until TCP gives up)."""
    return int(fleet.db.fetchone("SELECT count(*) AS n FROM pg_stat_activity WHERE client_addr = %s",
                                 (ADDRESSES[host],))["n"])


def throughput(fleet: Fleet, model: str, n: int, timeout: float = 300) -> float:
    """Runs per second for ``n`` submitted at once: from the first submission to the last end."""
    start = db_now(fleet)
    ids = submit_many(fleet, model, n)
    wait_terminal(fleet, ids, timeout)
    st = statuses(fleet, ids)
    assert all(s == "succeeded" for s in st.values()), Counter(st.values())
    return n / (last_terminal_at(fleet, ids) - start)
