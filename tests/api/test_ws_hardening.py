"""WebSocket hardening: Origin allow-list at the handshake, client messages over 64 KiB closed
1009, a reader more than 1 MiB behind closed 1013 and resuming with ?after=, a revoked key's
open streams closed within 5 s, stream tokens bound to one execution and short-lived, and a
client pinging every 10 ms while 8 MB stream to it receiving every frame intact."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import websocket

from shared import revocation
from shared.config import ConfigError, load_settings
from shared.store import workspaces
from tests.api.test_ws import (
    TERMINAL,
    connect,
    emit,
    make_execution,
    read_until_close,
    read_until_close_reason,
    seqs,
    token,
)
from tests.support import LiveServer, wait_for


@pytest.fixture(scope="module")
def rds(settings: Any) -> Any:
    from shared.redis_client import LeanRedis

    return LeanRedis(settings.redis_url)


@pytest.fixture(scope="module")
def origin_server(settings: Any) -> Iterator[LiveServer]:
    from api.app import create_app

    srv = LiveServer(create_app(settings.with_overrides(ws_allowed_origins=("https://app.example.com",))))
    srv.start()
    yield srv
    srv.stop()


def _ws_url(server: LiveServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def _handshake(server: LiveServer, path: str, key: str, origin: str | None) -> int:
    """The handshake's status: 101 when upgraded, else the refusal's."""
    options: dict[str, Any] = {"origin": origin} if origin else {"suppress_origin": True}
    try:
        conn = websocket.create_connection(_ws_url(server, path), timeout=10,
                                           header=[f"Authorization: Bearer {key}"], **options)
    except websocket.WebSocketBadStatusException as exc:
        assert json.loads(exc.resp_body)["detail"]["code"] == "origin_not_allowed"
        return int(exc.status_code)
    conn.close()
    return 101


def test_origin_is_checked_against_the_allow_list(origin_server, db, workspace):
    execution = make_execution(db, workspace[0])
    own = origin_server.url
    for path in (f"/ws/executions/{execution}", "/ws/notifications", "/ws/workflows/wf_anything"):
        assert _handshake(origin_server, path, workspace[1], "https://evil.example") == 403, path
        assert _handshake(origin_server, path, workspace[1], "null") == 403, path
        assert _handshake(origin_server, path, workspace[1], "https://app.example.com.evil.example") == 403
    for origin in (None, "https://app.example.com", "HTTPS://APP.EXAMPLE.COM/", own):
        assert _handshake(origin_server, f"/ws/executions/{execution}", workspace[1], origin) == 101, origin
        assert _handshake(origin_server, "/ws/notifications", workspace[1], origin) == 101, origin


def test_allowed_origins_setting_is_parsed_and_checked():
    s = load_settings({"WARDEN_WS_ALLOWED_ORIGINS": " https://a.example.com/ , http://localhost:3000,*"})
    assert s.ws_allowed_origins == ("https://a.example.com", "http://localhost:3000", "*")
    for bad in ("a.example.com", "https://a.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError):
            load_settings({"WARDEN_WS_ALLOWED_ORIGINS": bad})


def test_a_client_message_over_64_kib_closes_1009(server, app, db, rds, workspace):
    execution = make_execution(db, workspace[0])
    conn = connect(server, execution, tok=token(app, workspace[0], execution))
    assert json.loads(conn.recv())["seq"] == 1
    conn.send("x" * (64 * 1024))  # at the limit: ignored, the stream goes on
    emit(db, rds, execution)
    assert json.loads(conn.recv())["seq"] == 2
    conn.send("x" * (64 * 1024 + 1))
    got, code = read_until_close(conn, timeout=10)
    assert code == 1009 and got == []


def test_a_reader_over_1_mib_behind_is_closed_1013_and_resumes(server, app, db, rds, workspace):
    execution = make_execution(db, workspace[0])
    tok = token(app, workspace[0], execution)
    url = _ws_url(server, f"/ws/executions/{execution}?token={tok}")
    slow = websocket.create_connection(url, timeout=10, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    assert json.loads(slow.recv())["seq"] == 1
    for i in range(30):  # 3 MB while the client reads nothing
        emit(db, rds, execution, data={"i": i, "pad": "y" * 100_000})
    emit(db, rds, execution, TERMINAL)
    got, code, reason = read_until_close_reason(slow, timeout=20)
    assert code == 1013, (code, seqs(got))
    assert seqs(got) == list(range(2, 2 + len(got))) and len(got) < 31  # whole frames, in order, then the close
    last = got[-1]["seq"] if got else 1
    assert reason.endswith(f"after={last}"), reason
    rest, code = read_until_close(connect(server, execution, tok=tok, after=last), timeout=20)
    assert code == 1000 and seqs(got + rest) == list(range(2, 33))


def _revoke(db: Any, settings: Any, key: str) -> None:
    assert workspaces.revoke_key(db, key)
    revocation.announce(settings.redis_url)  # what `warden revoke-key` does


def test_a_revoked_keys_open_streams_close_within_5_s(server, app, db, settings, workspace):
    from shared.store import workspaces as ws_store

    key = ws_store.create_key(db, workspace[0], name="to-revoke")
    other = workspace[1]  # another key of the same workspace: its streams stay open
    execution = make_execution(db, workspace[0])
    key_id = db.fetchone("SELECT id FROM api_keys WHERE prefix = %s", (ws_store.key_prefix(key),))["id"]
    tok = app.extensions["warden"].tokens.issue(workspace[0], execution, key_id)
    doomed = [
        connect(server, execution, tok=tok),  # a token issued to the key
        connect(server, execution, key=key),  # the key itself
        websocket.create_connection(_ws_url(server, "/ws/notifications"), timeout=10,
                                    header=[f"Authorization: Bearer {key}"]),
    ]
    kept = connect(server, execution, key=other)
    assert json.loads(doomed[0].recv())["seq"] == 1 and json.loads(doomed[1].recv())["seq"] == 1
    assert json.loads(kept.recv())["seq"] == 1
    _revoke(db, settings, key)
    started = time.monotonic()
    results: dict[int, tuple[int, float]] = {}

    def watch(i: int, conn: websocket.WebSocket) -> None:
        got, code = _drain_until_close(conn, timeout=10)
        results[i] = (code, time.monotonic() - started)

    threads = [threading.Thread(target=watch, args=(i, c)) for i, c in enumerate(doomed)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert sorted(results) == [0, 1, 2], results
    for code, after_s in results.values():
        assert code == 1008 and after_s < 5.0, results
    kept.ping()
    kept.settimeout(1)
    assert kept.connected
    kept.close()


def _drain_until_close(conn: websocket.WebSocket, timeout: float) -> tuple[list[Any], int]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    try:
        while time.monotonic() < deadline:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            opcode, data = conn.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return got, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            if opcode == websocket.ABNF.OPCODE_TEXT:
                got.append(data)
        return got, 0
    except websocket.WebSocketTimeoutException:
        return got, 0
    finally:
        conn.close()


def test_stream_tokens_are_bound_and_short_lived(server, app, db, workspace):
    assert 0 < load_settings({}).ws_token_ttl_s <= 15 * 60  # minutes, not hours
    with pytest.raises(ConfigError):
        load_settings({"WARDEN_WS_TOKEN_TTL_S": "86400"})
    first, second = make_execution(db, workspace[0]), make_execution(db, workspace[0])
    tok = token(app, workspace[0], first)
    assert json.loads(connect(server, first, tok=tok).recv())["seq"] == 1
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(server, second, tok=tok)  # bound to the execution it was issued for
    assert refused.value.status_code == 401


class RawClient:
    """A WebSocket client on a bare socket: it reads at a pace it chooses and parses every frame
    strictly, so a control frame written inside a data frame is seen as the corruption it is."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.write_lock = threading.Lock()

    def ping(self, payload: bytes) -> None:
        mask = os.urandom(4)
        frame = bytes((0x89, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self.write_lock:
            self.sock.sendall(frame)

    def _need(self, n: int, pace_s: float) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(16384)
            if not chunk:
                raise EOFError(f"connection closed mid-frame; buffered {len(self.buf)}")
            self.buf += chunk
            time.sleep(pace_s)  # a reader slower than the server: its frames go out in pieces

    def frame(self, pace_s: float) -> tuple[int, bytes]:
        self._need(2, pace_s)
        first, second = self.buf[0], self.buf[1]
        assert first in (0x81, 0x8A, 0x88), f"torn stream: frame starts with {first:#x}"  # text, pong, close
        assert not second & 0x80  # server frames are never masked
        n, head = second & 0x7F, 2
        if n == 126:
            self._need(4, pace_s)
            n, head = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, pace_s)
            n, head = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(head + n, pace_s)
        payload, self.buf = self.buf[head:head + n], self.buf[head + n:]
        return first & 0x0F, payload


@pytest.fixture(scope="module")
def gevent_server(settings: Any) -> Iterator[LiveServer]:
    """The production server: gunicorn with the gevent worker (api/gunicorn_conf.py), where a
    pong is written by another greenlet whenever a frame's write waits for room."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import requests

    from warden.services import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, PORT=str(port),
               WARDEN_SECRET_KEY=settings.secret_key, WEB_CONCURRENCY="1", WARDEN_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", str(root / "api/gunicorn_conf.py"),
                             "api.app:create_app()"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=30)
        yield type("Srv", (), {"url": f"http://127.0.0.1:{port}"})()  # type: ignore[misc]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


EVENTS = 400


@pytest.mark.parametrize("kind", ["threads", "gevent"])
def test_pings_every_10_ms_while_8_mb_stream_never_tear_a_frame(request, kind, app, db, rds, workspace):
    srv = request.getfixturevalue("server" if kind == "threads" else "gevent_server")
    execution = make_execution(db, workspace[0])
    client = RawClient(_ws_url(srv, f"/ws/executions/{execution}?token={token(app, workspace[0], execution)}"))
    stop = threading.Event()
    sent_pings: list[bytes] = []
    received: list[int] = []
    pongs: list[bytes] = []

    def pinger() -> None:
        # Until the last event is published: the server closes right after sending it, and a
        # ping arriving after that close makes the kernel reset the connection (unread data),
        # which would discard what this slow reader has not read yet. That is TCP, not a frame.
        while not stop.wait(0.01) and not published.is_set():
            payload = f"p{len(sent_pings)}".encode()
            try:
                client.ping(payload)
            except OSError:
                return
            sent_pings.append(payload)

    def emitter() -> None:
        # 400 × 20 kB = 8 MB, at most 16 ahead of the reader (well under 1 MiB behind): the
        # listener writes them straight to the socket and the kernel often takes only part of one.
        for i in range(EVENTS):
            wait_for(lambda i=i: len(received) >= i - 15, timeout=30, interval=0.002)
            emit(db, rds, execution, data={"i": i, "pad": "z" * 20_000})
        published.set()
        time.sleep(0.2)  # the last pings are answered before the terminal event goes out
        emit(db, rds, execution, TERMINAL)

    published = threading.Event()
    threads = [threading.Thread(target=pinger, daemon=True), threading.Thread(target=emitter, daemon=True)]
    for t in threads:
        t.start()
    code = 0
    try:
        while True:
            opcode, payload = client.frame(pace_s=0.001)
            if opcode == 0x1:
                ev = json.loads(payload)  # a torn frame fails here or at the frame check above
                received.append(ev["seq"])
                assert ev["seq"] == len(received) and (ev["seq"] == 1 or ev["type"] == TERMINAL
                                                       or len(ev["data"]["pad"]) == 20_000)
            elif opcode == 0xA:
                pongs.append(payload)
            else:
                code = struct.unpack("!H", payload[:2])[0]
                break
    finally:
        stop.set()
        client.sock.close()
    assert code == 1000 and received == list(range(1, EVENTS + 3))
    assert len(sent_pings) > 20 and len(pongs) > 20  # pings went on throughout, and were answered
    assert set(pongs) <= set(sent_pings)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Server frames, parsed strictly: (opcode, payload) each; a torn frame fails here."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos] in (0x81, 0x8A), f"torn stream at byte {pos}: {data[pos]:#x}"
        n, head = data[pos + 1], 2
        if n == 126:
            n, head = struct.unpack("!H", data[pos + 2:pos + 4])[0], 4
        elif n == 127:
            n, head = struct.unpack("!Q", data[pos + 2:pos + 10])[0], 10
        assert pos + head + n <= len(data), "truncated frame"
        out.append((data[pos] & 0x0F, data[pos + head:pos + head + n]))
        pos += head + n
    return out


def test_a_pong_waits_for_the_tail_of_a_torn_frame() -> None:
    """The mechanism, deterministically: the listener's direct write leaves a frame half sent;
    the library answering a ping right then (``ws.sock.send`` from its reader thread) must wait
    until the handler has written the tail."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from api.fanout import Message, Subscription
    from api.ws import _Direct, serialize_writes

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ws = SimpleNamespace(sock=server)
    out = serialize_writes(ws)  # what every stream does first
    sub = Subscription("executions:exec_1", 100)
    direct = _Direct(sub, out)
    direct.attach(1)

    def event(seq: int) -> Message:
        msg = Message.parse("executions:exec_1", json.dumps(
            {"execution_id": "exec_1", "seq": seq, "type": "step", "at": "t", "data": {"p": "x" * 1500}}))
        assert msg is not None
        return msg

    seq = 1
    while direct.offer(event(seq + 1)):  # the client reads nothing meanwhile
        seq += 1
    last, rest, rest_seq = direct.detach()
    assert rest and rest_seq == seq + 1, "the buffer filled in the middle of a frame"
    pong = bytes((0x8A, 2)) + b"p1"
    library = threading.Thread(target=ws.sock.send, args=(pong,))  # the library's reader answering a ping
    library.start()
    library.join(0.3)
    assert library.is_alive(), "the pong did not wait for the torn frame"
    with ThreadPoolExecutor(1) as pool:
        def read_all() -> bytes:
            client.settimeout(1.0)
            chunks = []
            with contextlib.suppress(TimeoutError):
                while chunk := client.recv(1 << 20):
                    chunks.append(chunk)
            return b"".join(chunks)

        reading = pool.submit(read_all)
        out.inner.sendall(rest)  # the handler writes the tail (ExecutionStream._write, locked=True) ...
        out.lock.release()  # ... and lets the others write
        library.join(5)
        frames = _frames(reading.result())
    texts = [json.loads(p)["seq"] for op, p in frames if op == 0x1]
    assert texts == list(range(2, rest_seq + 1)) and frames[-1] == (0xA, b"p1")
    server.close()
    client.close()


def _not_reading(server: LiveServer, path: str, key: str) -> websocket.WebSocket:
    """A client that reads nothing yet: a small receive buffer, so the server's writes back up."""
    return websocket.create_connection(_ws_url(server, path), timeout=10, header=[f"Authorization: Bearer {key}"],
                                       sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])


def test_a_notifications_reader_over_1_mib_behind_is_closed_1013_and_resumes(server, db, settings, workspace):
    import redis

    from shared.ids import new_id
    from shared.store import notifications

    slow = _not_reading(server, "/ws/notifications", workspace[1])
    time.sleep(0.5)  # subscribed
    pub = redis.Redis.from_url(settings.redis_url)
    ids = []
    for i in range(30):  # 3 MB, live, while the client reads nothing
        nid = new_id("ntf")
        with db.transaction() as cur:
            cur.execute("INSERT INTO notifications (id, workspace_id, title, body) VALUES (%s, %s, %s, %s)"
                        " RETURNING *", (nid, workspace[0], f"n{i}", json.dumps({"i": i, "pad": "y" * 100_000})))
            row = cur.fetchone()
        pub.publish(notifications.channel_for(workspace[0]), json.dumps(notifications.to_json(row)))
        ids.append(nid)
    got, code, reason = read_until_close_reason(slow, timeout=20)
    sent = [n["notification_id"] for n in got]
    assert code == 1013, (code, len(sent))
    assert sent == ids[:len(sent)] and len(sent) < 30  # whole frames, in order, then the close
    resume = reason.rsplit("after=", 1)[1]
    assert sent and resume == sent[-1], reason
    rest = websocket.create_connection(_ws_url(server, f"/ws/notifications?after={resume}"), timeout=10,
                                       header=[f"Authorization: Bearer {workspace[1]}"])
    try:
        more = [json.loads(rest.recv())["notification_id"] for _ in range(30 - len(sent))]
    finally:
        rest.close()
    assert sent + more == ids


def test_a_workflow_reader_over_1_mib_behind_is_closed_1013_and_resumes(server, db, settings, workspace):
    import redis

    from shared import workflow_events
    from shared.ids import new_id
    from shared.store import workflows

    wf = new_id("wf")
    with db.transaction() as cur:
        cur.execute("INSERT INTO workflows (id, workspace_id, name, status) VALUES (%s, %s, 'big', 'running')",
                    (wf, workspace[0]))
        workflows.append_event(cur, wf, "workflow.created", {"stages": []})
    slow = _not_reading(server, f"/ws/workflows/{wf}", workspace[1])
    time.sleep(0.5)  # subscribed
    pub = redis.Redis.from_url(settings.redis_url)
    for i in range(31):  # 3 MB, live, while the client reads nothing; then the end
        with db.transaction() as cur:
            ev = (workflows.append_event(cur, wf, "stage.skipped", {"stage": f"s{i}", "pad": "y" * 100_000})
                  if i < 30 else workflows.append_event(cur, wf, "workflow.succeeded", {}))
        workflow_events.publish(pub, [ev])
    got, code, reason = read_until_close_reason(slow, timeout=20)
    assert code == 1013, (code, seqs(got))
    assert seqs(got) == list(range(1, 1 + len(got))) and len(got) < 31
    last = got[-1]["seq"] if got else 0
    assert reason.endswith(f"after={last}"), reason
    rest, code, _ = read_until_close_reason(_not_reading(server, f"/ws/workflows/{wf}?after={last}", workspace[1]),
                                            timeout=20)
    assert code == 1000 and seqs(got + rest) == list(range(1, 33))
