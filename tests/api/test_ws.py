"""WebSocket streams: replay, live, mid-run join, close codes, auth refusals, Redis restart.

A real WebSocket client (websocket-client) against the live server. Events are written the way a
worker writes them (append in a transaction, then publish), so these tests do not depend on the
executor. Every wait is bounded.
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

from shared import events
from shared.ids import new_id
from shared.redis_client import LeanRedis
from shared.store import executions
from tests.support import LiveServer, wait_for

TERMINAL = "execution.succeeded"


# -- helpers -----------------------------------------------------------------------------------
def make_execution(db: Any, workspace_id: str) -> str:
    """An execution with its seq-1 ``execution.queued`` event and no outbox row, so that no worker
    in this session ever runs it: the test is the only writer of its events."""
    eid = new_id("exec")
    new = executions.NewExecution(
        id=eid, workspace_id=workspace_id, task="ws test", compliance_policy="default",
        policy_version="1", provider="local", model="local-planner-1", budget_cents=100,
        requested_permissions=None, effective_permissions=["read_documents"], denied_permissions=[],
        webhook_url=None, queued_event={"test": True})
    with db.transaction() as cur:
        executions.insert(cur, new)
        cur.execute("DELETE FROM outbox WHERE args = jsonb_build_array(%s::text)", (eid,))
        # Held under a lease no worker has, for a day: the fair-share scheduler gives every run
        # message the next queued run, whichever it names, so a queued one would be run.
        cur.execute("UPDATE executions SET status = 'running', lease_expires_at = now() + interval '1 day'"
                    " WHERE id = %s", (eid,))
    return eid


def emit(db: Any, rds: LeanRedis | None, eid: str, type_: str = "tool.completed",
         data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a worker does: store the event (gapless seq) with the status it implies, commit, then
    publish (rds None: the publish is lost)."""
    with db.transaction() as cur:
        ev = events.append_event(cur, eid, type_, data or {})
        if type_.startswith("execution.") and type_ != "execution.started":
            cur.execute("UPDATE executions SET status = %s WHERE id = %s", (type_.split(".", 1)[1], eid))
    if rds is not None:
        events.publish(rds, [ev])
    return ev


def key_id_of(db: Any, workspace_id: str) -> str:
    """The id of the workspace's (first) key: stream tokens name the key they were issued to."""
    return str(db.fetchone("SELECT id FROM api_keys WHERE workspace_id = %s ORDER BY id LIMIT 1",
                           (workspace_id,))["id"])


def token(app: Any, workspace_id: str, eid: str) -> str:
    svc = app.extensions["warden"]
    return svc.tokens.issue(workspace_id, eid, key_id_of(svc.db, workspace_id))


def connect(server: LiveServer, eid: str, *, tok: str | None = None, after: int | None = None,
            key: str | None = None) -> websocket.WebSocket:
    query = "&".join(p for p in (f"token={tok}" if tok else "", f"after={after}" if after is not None else "")
                     if p)
    url = server.url.replace("http://", "ws://") + f"/ws/executions/{eid}" + (f"?{query}" if query else "")
    headers = [f"Authorization: Bearer {key}"] if key else []
    return websocket.create_connection(url, timeout=10, header=headers)


def read_until_close(conn: websocket.WebSocket, timeout: float = 15.0) -> tuple[list[dict[str, Any]], int]:
    """Every event until the server's close frame; returns (events, close code)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no close within {timeout}s; got seqs {[e['seq'] for e in got]}")
            conn.settimeout(remaining)
            opcode, data = conn.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                got.append(json.loads(data))
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                return got, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
    finally:
        conn.close()


def seqs(evs: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in evs]


@pytest.fixture(scope="module")
def rds(settings: Any) -> LeanRedis:
    return LeanRedis(settings.redis_url)


@pytest.fixture()
def execution(db: Any, workspace: tuple[str, str]) -> str:
    return make_execution(db, workspace[0])


# -- replay and live ---------------------------------------------------------------------------
def test_replay_from_zero_and_from_after_then_close_1000(server, app, db, rds, workspace, execution) -> None:
    for i in range(3):
        emit(db, rds, execution, "tool.completed", {"i": i})
    emit(db, rds, execution, TERMINAL, {"output": "done"})
    tok = token(app, workspace[0], execution)

    got, code = read_until_close(connect(server, execution, tok=tok))
    assert seqs(got) == [1, 2, 3, 4, 5] and code == 1000
    assert got[0]["type"] == "execution.queued" and got[-1]["type"] == TERMINAL
    assert set(got[1]) == {"execution_id", "seq", "type", "at", "data"} and got[1]["data"] == {"i": 0}

    got, code = read_until_close(connect(server, execution, tok=tok, after=3))
    assert seqs(got) == [4, 5] and code == 1000
    got, code = read_until_close(connect(server, execution, tok=tok, after=5))  # nothing left
    assert got == [] and code == 1000


def test_websocket_url_from_intake_is_accepted(server, client) -> None:
    body = client.post("/api/v1/tasks", {"task": "Summarize the note."}).json()
    conn = websocket.create_connection(body["websocket_url"], timeout=10)
    try:
        first = json.loads(conn.recv())
    finally:
        conn.close()
    assert first["seq"] == 1 and first["type"] == "execution.queued"
    assert first["execution_id"] == body["execution_id"]


def test_live_events_arrive_in_order_and_close_1000_after_terminal(server, app, db, rds, workspace,
                                                                    execution) -> None:
    conn = connect(server, execution, tok=token(app, workspace[0], execution))
    assert json.loads(conn.recv())["seq"] == 1  # replayed; we are now live

    def worker() -> None:
        for i in range(5):
            emit(db, rds, execution, "llm.completed", {"i": i})
            time.sleep(0.01)
        emit(db, rds, execution, TERMINAL)

    t = threading.Thread(target=worker)
    t.start()
    got, code = read_until_close(conn)
    t.join(10)
    assert seqs(got) == [2, 3, 4, 5, 6, 7] and code == 1000
    assert got[-1]["type"] == TERMINAL


def test_a_client_that_negotiates_compression_gets_the_same_stream(server, app, db, rds, workspace,
                                                                  execution) -> None:
    """A client that negotiated permessage-deflate is served through the WebSocket library's own
    framing, socket by socket; everyone else gets the frames the fan-out built once per event."""
    from websockets.sync.client import connect as ws_connect

    url = (server.url.replace("http://", "ws://") + f"/ws/executions/{execution}"
           f"?token={token(app, workspace[0], execution)}")
    with ws_connect(url, open_timeout=10) as conn:
        assert conn.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        assert json.loads(conn.recv(timeout=10))["seq"] == 1
        for i in range(3):
            emit(db, rds, execution, "llm.completed", {"i": i, "pad": "x" * 300})
        emit(db, rds, execution, TERMINAL)
        got = [json.loads(conn.recv(timeout=10)) for _ in range(4)]
        assert seqs(got) == [2, 3, 4, 5] and got[0]["data"]["pad"] == "x" * 300
        # The close frame itself: the dev server may keep the TCP connection open a while after it.
        assert wait_for(lambda: conn.protocol.close_rcvd).code == 1000


def test_mid_run_join_sees_every_event_exactly_once(server, app, db, rds, workspace, execution) -> None:
    """Clients join at random moments while a worker appends and publishes as fast as it can."""
    n = 80
    tok = token(app, workspace[0], execution)
    results: list[tuple[int, list[int], int]] = []
    lock = threading.Lock()

    def watcher(after: int, delay: float) -> None:
        time.sleep(delay)
        got, code = read_until_close(connect(server, execution, tok=tok, after=after), timeout=20)
        with lock:
            results.append((after, seqs(got), code))

    def worker() -> None:
        for i in range(n):
            emit(db, rds, execution, "tool.requested", {"i": i})
            if i % 7 == 0:
                time.sleep(0.005)
        emit(db, rds, execution, TERMINAL)

    rng = random.Random(7)
    watchers = [threading.Thread(target=watcher, args=(rng.choice([0, 0, 0, 5, 20]), rng.uniform(0, 0.3)))
                for _ in range(8)]
    for t in watchers:
        t.start()
    worker()
    for t in watchers:
        t.join(25)
    last = n + 2  # queued + n + terminal
    assert len(results) == len(watchers)
    for after, got, code in results:
        assert got == list(range(after + 1, last + 1)), f"after={after}: {got}"
        assert code == 1000


def test_lost_publish_is_filled_from_the_store_and_duplicates_are_dropped(server, app, db, rds, workspace,
                                                                          execution) -> None:
    conn = connect(server, execution, tok=token(app, workspace[0], execution))
    assert json.loads(conn.recv())["seq"] == 1
    emit(db, None, execution)  # seq 2: stored, publish lost
    ev3 = emit(db, rds, execution)  # seq 3 reveals the gap
    events.publish(rds, [ev3])  # delivered twice
    emit(db, rds, execution, TERMINAL)
    got, code = read_until_close(conn)
    assert seqs(got) == [2, 3, 4] and code == 1000


def test_a_lost_terminal_publish_is_found_when_the_stream_goes_quiet(server, app, db, rds, workspace,
                                                                    execution, monkeypatch) -> None:
    from api.ws import stream_state

    monkeypatch.setattr(stream_state(app).hub, "tick_s", 0.1)
    monkeypatch.setattr("api.ws.IDLE_CATCH_UP_S", (0.3, 0.5))
    conn = connect(server, execution, tok=token(app, workspace[0], execution))
    assert json.loads(conn.recv())["seq"] == 1
    emit(db, rds, execution)
    emit(db, None, execution, "execution.error", {"code": "provider_error"})  # never published
    got, code = read_until_close(conn, timeout=10)
    assert seqs(got) == [2, 3] and code == 1000


def test_already_terminal_execution_replays_and_closes(server, app, db, rds, workspace, execution) -> None:
    emit(db, rds, execution, "execution.cancelled", {"reason": "user"})
    got, code = read_until_close(connect(server, execution, key=workspace[1]))
    assert seqs(got) == [1, 2] and code == 1000


def test_a_closed_client_releases_its_subscription(server, app, db, rds, workspace, execution) -> None:
    from api.ws import stream_state

    hub = stream_state(app).hub
    channel = events.channel_for(execution)
    conn = connect(server, execution, tok=token(app, workspace[0], execution))
    conn.recv()
    assert hub.count(channel) == 1
    conn.close()
    emit(db, rds, execution)  # wakes the handler, which finds its client gone
    wait_for(lambda: hub.count(channel) == 0, timeout=10)


# -- refusals ----------------------------------------------------------------------------------
def refusal(server: LiveServer, eid: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(server, eid, **kw)
    return info.value.status_code, json.loads(info.value.resp_body)["detail"]


def test_auth_refusals(server, app, db, workspace, execution) -> None:
    other_ws, other_key = _other_workspace(db)
    other_exec = make_execution(db, other_ws)
    good = token(app, workspace[0], execution)

    assert refusal(server, execution)[0] == 401  # no credentials
    status, detail = refusal(server, execution, tok="not-a-token")
    assert status == 401 and detail["code"] == "unauthorized"
    assert refusal(server, execution, tok=good[:-2] + ("AA" if not good.endswith("AA") else "BB"))[0] == 401
    assert refusal(server, other_exec, tok=good)[0] == 401  # a token for another execution
    assert refusal(server, execution, key="wdn_nope_" + "x" * 32)[0] == 401
    status, detail = refusal(server, execution, key=other_key)  # another workspace's key
    assert status == 404 and detail["code"] == "not_found"
    assert refusal(server, "exec_missing", key=workspace[1])[0] == 404
    assert refusal(server, execution, tok=good, after=-1)[0] == 400

    conn = connect(server, execution, key=workspace[1])  # own key in the header: accepted
    assert json.loads(conn.recv())["seq"] == 1
    conn.close()


def _other_workspace(db: Any) -> tuple[str, str]:
    from shared.store import workspaces

    ws = workspaces.get_or_create_workspace(db, f"other-{secrets.token_hex(6)}")
    return ws.id, workspaces.create_key(db, ws.id)


def test_expired_token_is_refused(app, server, workspace, execution) -> None:
    from api.tokens import StreamTokens

    old = StreamTokens(app.extensions["warden"].settings.secret_key, 1).issue(
        workspace[0], execution, key_id_of(app.extensions["warden"].db, workspace[0]))
    time.sleep(2.1)  # itsdangerous timestamps have one-second resolution
    tokens = app.extensions["warden"].tokens
    saved = tokens.ttl_s
    tokens.ttl_s = 1
    try:
        assert refusal(server, execution, tok=old)[0] == 401
    finally:
        tokens.ttl_s = saved


# -- Redis restart -----------------------------------------------------------------------------
def test_redis_restart_while_streaming_loses_and_duplicates_nothing(settings, db, workspace, tmp_path: Path,
                                                                    monkeypatch) -> None:
    from api.app import create_app
    from api.ws import stream_state
    from warden.services import EmbeddedRedis

    own = EmbeddedRedis(tmp_path / "redis", persist=False)
    url = own.start()
    app = create_app(settings.with_overrides(redis_url=url))
    hub = stream_state(app).hub
    srv = LiveServer(app)
    srv.start()
    rds = LeanRedis(url)
    eid = make_execution(db, workspace[0])
    clients = [connect(srv, eid, tok=token(app, workspace[0], eid)) for _ in range(3)]
    try:
        for c in clients:
            assert json.loads(c.recv())["seq"] == 1
        wait_for(hub.connected.is_set, timeout=10)
        before = hub.subscribed_count
        for _ in range(5):
            emit(db, rds, eid)  # live: seq 2..6

        own.stop()
        wait_for(lambda: not hub.connected.is_set(), timeout=10)
        for _ in range(4):
            emit(db, rds, eid)  # seq 7..10: stored, publish fails (Redis is down)
        # Same port, as a restarted server would have. redis-server binds with SO_REUSEADDR, but
        # EmbeddedRedis's free-port probe does not and would move to a new port during TIME_WAIT.
        monkeypatch.setattr("warden.services._port_free", lambda port: True)
        assert own.start() == url
        wait_for(lambda: hub.subscribed_count > before, timeout=15)
        for _ in range(3):
            emit(db, rds, eid)  # seq 11..13: live again
        emit(db, rds, eid, TERMINAL)  # seq 14

        for c in clients:
            got, code = read_until_close(c, timeout=15)
            assert [1] + seqs(got) == list(range(1, 15))
            assert code == 1000
    finally:
        for c in clients:
            c.close()
        srv.stop()
        hub.stop()
        own.stop()


def test_gevent_worker_streams_across_a_redis_restart(settings, db, workspace, tmp_path: Path,
                                                      monkeypatch) -> None:
    """The production server: gunicorn with the gevent worker from api/gunicorn_conf.py."""
    import os
    import subprocess
    import sys

    import requests

    from api.tokens import StreamTokens
    from warden.services import EmbeddedRedis, free_port

    own = EmbeddedRedis(tmp_path / "redis", persist=False)
    url = own.start()
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, DATABASE_URL=settings.database_url, REDIS_URL=url, PORT=str(port),
               WARDEN_SECRET_KEY=settings.secret_key, WEB_CONCURRENCY="1", WARDEN_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", str(root / "api/gunicorn_conf.py"),
                             "api.app:create_app()"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    rds = LeanRedis(url)
    try:
        wait_for(lambda: _up(requests, f"http://127.0.0.1:{port}/healthz"), timeout=20)
        eid = make_execution(db, workspace[0])
        tok = StreamTokens(settings.secret_key, 60).issue(workspace[0], eid, key_id_of(db, workspace[0]))
        srv = type("Srv", (), {"url": f"http://127.0.0.1:{port}"})()
        conn = connect(srv, eid, tok=tok)  # type: ignore[arg-type]
        assert json.loads(conn.recv())["seq"] == 1
        emit(db, rds, eid)
        assert json.loads(conn.recv())["seq"] == 2  # live through the gevent hub
        own.stop()
        emit(db, rds, eid)  # seq 3: publish lost while Redis is down
        monkeypatch.setattr("warden.services._port_free", lambda port: True)
        assert own.start() == url
        time.sleep(0.5)
        emit(db, rds, eid)  # seq 4, once the hub is back (or found by its resync)
        emit(db, rds, eid, TERMINAL)
        got, code = read_until_close(conn, timeout=20)
        assert seqs(got) == [3, 4, 5] and code == 1000

        # A client that stops reading: the listener's direct sends fill its socket, tear a frame,
        # and hand the rest to its handler; once it reads again, everything arrives whole, in order.
        eid = make_execution(db, workspace[0])
        tok = StreamTokens(settings.secret_key, 60).issue(workspace[0], eid, key_id_of(db, workspace[0]))
        url = f"ws://127.0.0.1:{port}/ws/executions/{eid}?token={tok}"
        slow = websocket.create_connection(url, timeout=10, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        assert json.loads(slow.recv())["seq"] == 1
        for i in range(40):
            emit(db, rds, eid, data={"i": i, "pad": "x" * 200_000})  # 8 MB: beyond any send buffer
        emit(db, rds, eid, TERMINAL)
        time.sleep(0.5)
        got, code = read_until_close(slow, timeout=20)
        assert seqs(got) == list(range(2, 43)) and code == 1000
        assert [e["data"].get("i") for e in got[:-1]] == list(range(40))
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
        own.stop()


def _up(requests: Any, url: str) -> bool:
    try:
        return bool(requests.get(url, timeout=1).status_code == 200)
    except requests.RequestException:
        return False
