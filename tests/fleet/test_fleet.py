"""Warden across hosts: two API hosts, three executions worker hosts, a pools host, a relay and
beat host and a data host, each its own network namespace (tests/fleet/harness.py), with real
faults: hosts killed with their link cut, a worker host partitioned, Redis restarted.

Every run here uses a scripted model on the fake LLM (email, write a document, answer), so a run
that executed twice would show a second certificate or email, and one that was lost, a
non-terminal status.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import websocket

from guard import verify_chain
from tests.fleet import scenarios as sc
from tests.fleet.conftest import EXEC_CONCURRENCY, LEASE_S, VISIBILITY_S
from tests.fleet.harness import ADDRESSES, API_HOSTS, EXEC_HOSTS, Fleet
from tests.support import wait_for

pytestmark = pytest.mark.timeout(300)


def test_submissions_through_both_api_hosts_run_on_every_worker_host(healthy: Fleet) -> None:
    fleet = healthy
    model = sc.script_model(fleet, delay=0.3)
    ids = sc.submit_many(fleet, model, 36)
    sc.wait_terminal(fleet, ids, timeout=120)
    recs = sc.records(fleet, ids)
    assert sc.exactly_once_problems(recs, ids) == []
    assert sc.worker_problems(recs) == []
    spread = sc.host_counts(recs)
    print(f"\nfleet spread: 36 runs over {spread}")
    assert set(spread) == set(EXEC_HOSTS), spread
    # The execution record names the worker that wrote its last event.
    client = fleet.api("api2")
    for eid in ids[:6]:
        last = recs[eid].events[-1]["data"]["worker"]
        assert client.get(f"/api/v1/executions/{eid}").json()["worker"] == last
    keys = client.get("/api/v1/compliance/keys").json()
    for eid in ids[:3]:
        certs = fleet.api("api1").get(f"/api/v1/executions/{eid}/certificates").json()["items"]
        assert verify_chain(certs, keys) == []


class Stream:
    """A WebSocket client reading one execution's events into a list, in a thread of its own."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.ws = websocket.create_connection(url, timeout=120)
        self.thread = threading.Thread(target=self._read, daemon=True, name="fleet-ws")
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                msg = self.ws.recv()
                if not msg:
                    break
                self.events.append(json.loads(msg))
        except websocket.WebSocketConnectionClosedException:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.closed.set()


def _on_host(websocket_url: str, host: str) -> str:
    parts = urlsplit(websocket_url)
    return urlunsplit(parts._replace(netloc=f"{ADDRESSES[host]}:8000"))


def test_websocket_on_one_api_host_streams_a_run_from_another_as_it_moves_worker_hosts(healthy: Fleet) -> None:
    fleet = healthy
    model = f"fleet-ws-{secrets.token_hex(4)}"
    fleet.llm.script(model, [
        {"calls": [("send_email", {"to": "ops@example.com", "subject": "Report", "body": "All good."})],
         "delay": 0.2},
        # The first request of this turn never gets its answer in time: exec3 dies waiting for it.
        {"calls": [("write_document", {"name": "report", "content": "All good."})], "delay_first": 600},
        {"text": "Emailed and saved."},
    ])
    # Only exec3 runs work until this run is running there: the other two are stopped cleanly.
    for name in ("exec1", "exec2"):
        fleet.hosts[name].stop()
    r = fleet.api("api2").post("/api/v1/tasks", json={
        "task": "Email and save the report", "provider": "openai", "model": model, "permissions": sc.PERMISSIONS})
    assert r.status_code == 201, r.text
    eid = r.json()["execution_id"]
    stream = Stream(_on_host(r.json()["websocket_url"], "api1"))  # submitted via api2, watched via api1
    _wait(lambda: len(fleet.llm.requests[model]) >= 2, 30, "the second model call")
    for name in ("exec1", "exec2"):
        fleet.hosts[name].start()
    fleet.wait_ready(60, ["exec1", "exec2"])
    # exec3's worker processes die mid-call (SIGKILL, link up): the run must come back elsewhere.
    seen = list(stream.events)
    assert seen and all((e["data"].get("worker") or {}).get("host") == "exec3"
                        for e in seen if e["type"] != "execution.queued"), [
        (e["type"], e["data"].get("worker")) for e in seen]
    fleet.hosts["exec3"].kill()
    killed_at = time.monotonic()
    assert stream.closed.wait(LEASE_S * 6 + 30), f"stream still open; got {[e['type'] for e in stream.events]}"
    assert stream.error is None, stream.error
    evs = stream.events
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), [e["seq"] for e in evs]
    assert evs[-1]["type"] == "execution.succeeded"
    hosts = sc.RunRecord(eid, "succeeded", events=evs).hosts
    print(f"\nfleet websocket: {len(evs)} events via api1 for a run submitted via api2, hosts {hosts}; "
          f"ended {time.monotonic() - killed_at:.1f} s after exec3's workers were killed")
    assert hosts[0] == "exec3" and len(hosts) == 2 and hosts[1] in ("exec1", "exec2"), hosts
    recs = sc.records(fleet, [eid])
    assert sc.exactly_once_problems(recs, [eid]) == []


def test_killed_worker_host_runs_end_once_on_other_hosts(healthy: Fleet) -> None:
    fleet = healthy
    model = sc.script_model(fleet, delay=1.0)
    ids, held, recovery = sc.kill_and_recover(fleet, "exec2", model, 45, min_held=EXEC_CONCURRENCY,
                                              timeout=LEASE_S * 6 + 60)
    recs = sc.records(fleet, ids)
    print(f"\nfleet host loss: exec2 killed holding {len(held)} of 45 runs; recovery {recovery:.1f} s "
          f"(lease {LEASE_S} s); spread {sc.host_counts(recs)}")
    assert sc.exactly_once_problems(recs, ids) == []
    assert sc.worker_problems(recs) == []
    for eid in held:
        assert recs[eid].hosts[0] == "exec2" and recs[eid].finished_on in ("exec1", "exec3"), recs[eid].hosts


def test_worker_host_partitioned_from_redis_loses_nothing_and_runs_nothing_twice(healthy: Fleet) -> None:
    fleet = healthy
    model = sc.script_model(fleet, delay=1.0)
    ids = sc.submit_many(fleet, model, 40)
    _wait(lambda: len(sc.held_by(fleet, "exec1", ids)) >= 2, 60, "exec1 holding runs")
    fleet.partition("exec1")  # link down, processes alive
    cut_at = time.monotonic()
    held = sc.held_by(fleet, "exec1", ids)  # (nothing exec1 does reaches the database any more)
    # Its messages come back to the other hosts after the visibility timeout; those runs may end
    # there while exec1 is cut off, or on exec1 after the heal, but each exactly once.
    while time.monotonic() - cut_at < 30:
        taken = sum(1 for s in sc.statuses(fleet, held).values() if s in sc.TERMINAL)
        time.sleep(0.5)
    fleet.heal("exec1")
    sc.wait_terminal(fleet, ids, timeout=120)
    # exec1 is back: it answers by its node name and runs new work.
    _wait(lambda: "executions@exec1" in fleet.ping(["executions@exec1"]), 60, "exec1 answering after the heal")
    recs = sc.records(fleet, ids)
    print(f"\nfleet partition: exec1 cut off 30 s holding {len(held)} runs, {taken} of them ended elsewhere "
          f"meanwhile; they ended {[(recs[i].status, recs[i].finished_on) for i in held]}; "
          f"spread {sc.host_counts(recs)}")
    # A run exec1 was driving when it lost its network may end `error` (its model call failed, or
    # it ran past its time limit waiting) instead of moving to another host, but it ends once.
    assert sc.exactly_once_problems(recs, ids, may_fail=set(held)) == []
    assert sc.worker_problems(recs) == []
    after = sc.submit_many(fleet, sc.script_model(fleet, delay=0.1), 24)
    sc.wait_terminal(fleet, after, timeout=90)
    assert sc.exactly_once_problems(sc.records(fleet, after), after) == []


def test_killed_api_host_loses_no_acknowledged_submission(healthy: Fleet) -> None:
    fleet = healthy
    key = fleet.new_key()
    model = sc.script_model(fleet, delay=0.1)
    hosts = {h: f"http://{ADDRESSES[h]}:8000" for h in API_HOSTS}
    answers: dict[str, str] = {}
    retries = {"n": 0}
    lock = threading.Lock()
    done = {"n": 0}

    def submit(i: int) -> None:
        idem = f"fleet-{i}-{secrets.token_hex(4)}"
        session = requests.Session()
        order = list(API_HOSTS) if i % 2 == 0 else list(reversed(API_HOSTS))
        for attempt in range(40):
            base = hosts[order[attempt % 2]]
            try:
                r = session.post(base + "/api/v1/tasks", timeout=(1, 10), headers={
                    "Authorization": f"Bearer {key}", "Idempotency-Key": idem}, json={
                    "task": "Email and save the report", "provider": "openai", "model": model,
                    "permissions": sc.PERMISSIONS})
            except requests.RequestException:
                with lock:
                    retries["n"] += 1
                continue
            if r.status_code == 201:
                with lock:
                    answers[idem] = r.json()["execution_id"]
                    done["n"] += 1
                return
            assert r.status_code in (409, 502, 503), r.text  # in progress elsewhere / unavailable: retry
            with lock:
                retries["n"] += 1
            time.sleep(0.2)
        raise AssertionError(f"submission {i} got no 201 in 40 attempts")

    n = 60
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(submit, i) for i in range(n)]
        _wait(lambda: done["n"] >= 15, 60, "the first submissions")
        fleet.kill_host("api1")
        for f in futures:
            f.result()
    ids = sorted(set(answers.values()))
    assert len(answers) == n and len(ids) == n
    sc.wait_terminal(fleet, ids, timeout=120)
    recs = sc.records(fleet, ids)
    assert sc.exactly_once_problems(recs, ids) == []
    # Nothing was created twice: the workspace holds exactly the acknowledged executions.
    total = fleet.api("api2", key).get("/api/v1/executions?limit=100").json()
    assert sorted(e["execution_id"] for e in total["items"]) == ids
    print(f"\nfleet API host loss: {n} submissions, all acknowledged ({retries['n']} retries against the "
          f"other host), {len(ids)} executions, all succeeded")


def test_redis_restart_every_host_reconnects_and_work_resumes(healthy: Fleet) -> None:
    fleet = healthy
    model = sc.script_model(fleet, delay=0.5)
    slow = sc.script_model(fleet, delay=2.0)  # two runs that go on across the restart, watched live
    watched = []
    for via, watch in (("api1", "api2"), ("api2", "api1")):
        r = fleet.api(via).post("/api/v1/tasks", json={"task": "Email and save the report", "provider": "openai",
                                                      "model": slow, "permissions": sc.PERMISSIONS})
        assert r.status_code == 201, r.text
        watched.append((r.json()["execution_id"], Stream(_on_host(r.json()["websocket_url"], watch))))
    before = sc.submit_many(fleet, model, 24)
    _wait(lambda: all(len(s.events) >= 2 for _, s in watched), 30, "the watched runs started")
    fleet.stop_redis()
    down_at = time.monotonic()
    time.sleep(2)  # Redis stays away for a moment, as in a real restart
    fleet.start_redis()
    up_at = time.monotonic()
    # Every worker, the relay and beat hold Redis connections of their own: each must come back.
    # (An API process connects per request, and its fan-out listener once it has sockets: the
    # watched streams below show that one reconnected.)
    names = {ADDRESSES[h]: h for h in (*EXEC_HOSTS, "pools", "relay")}
    _wait(lambda: set(names) <= fleet.redis_client_addresses(), 30, "every worker host's Redis connection",
          on_fail=lambda: f"missing {[names[a] for a in set(names) - fleet.redis_client_addresses()]}")
    reconnected = time.monotonic() - up_at
    nodes = [f"executions@{h}" for h in EXEC_HOSTS] + [f"{p}@pools" for p in fleet.hosts["pools"].commands]
    _wait(lambda: fleet.ping(nodes) >= set(nodes), 30, "every worker answering")
    restarted = fleet.db.fetchone("SELECT now() AS t")["t"]
    after = sc.submit_many(fleet, sc.script_model(fleet, delay=0.1), 12)
    # Work resumes: as many runs finish after the restart as were just submitted. Which runs those
    # are is not fixed: a run message is a slot's worth of work and starts the oldest queued run of
    # its workspace (shared/store/runs.begin), and the messages of runs submitted before the restart
    # that a worker held when its connection broke wait out their visibility timeout (below).
    ids_so_far = before + after

    def finished_since_restart() -> int:
        return fleet.db.fetchone("SELECT count(*) AS n FROM executions WHERE id = ANY(%s) AND finished_at > %s",
                                 (ids_so_far, restarted))["n"]

    _wait(lambda: finished_since_restart() >= len(after), max(5.0, 30 - (time.monotonic() - up_at)),
          "work resumed after the restart", on_fail=lambda: f"{finished_since_restart()} runs finished since")
    resumed = time.monotonic() - up_at
    for eid, stream in watched:
        assert stream.closed.wait(60), f"{eid}: stream open; got {[e['seq'] for e in stream.events]}"
        evs = stream.events
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)) and evs[-1]["type"] == "execution.succeeded"
    # Runs a worker had taken but not started when its connection broke come back after the
    # visibility timeout and a sweep (up to 100 s more with kombu's defaults): none is lost.
    before_done = sc.wait_terminal(fleet, before + after, timeout=VISIBILITY_S + 120) + (time.monotonic() - up_at)
    ids = before + after + [eid for eid, _ in watched]
    recs = sc.records(fleet, ids)
    print(f"\nfleet Redis restart: down {up_at - down_at:.1f} s; every worker host reconnected {reconnected:.1f} s "
          f"after it came back; 12 runs done {resumed:.1f} s after; all 36 done "
          f"{before_done:.1f} s after; streams on both API hosts gapless; "
          f"spread {sc.host_counts(recs)}")
    assert sc.exactly_once_problems(recs, ids) == []
    assert not [name for name, h in fleet.hosts.items() if not all(h.alive().values())]


def _wait(predicate: Any, timeout: float, what: str, on_fail: Any = None) -> Any:
    return wait_for(predicate, timeout, 0.2, what=what, on_fail=on_fail)
