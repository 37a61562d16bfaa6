"""LeanRedis's publishes that do not wait: delivered at least once, also when the connection
they were sent on dies before their confirmation was read."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import redis as redis_lib

from shared import events
from shared.redis_client import LeanRedis, pack


def _listen(settings: Any, channel: str) -> Any:
    sub = redis_lib.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    sub.subscribe(channel)
    sub.get_message(timeout=1)
    return sub


def _received(sub: Any, n: int) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(out) < n and time.monotonic() < deadline:
        msg = sub.get_message(timeout=0.2)
        if msg:
            out.append(msg["data"])
    time.sleep(0.1)
    while (msg := sub.get_message(timeout=0.05)) is not None:
        out.append(msg["data"])
    return out


def test_unwaited_publishes_are_confirmed_by_the_next_call(settings: Any) -> None:
    channel = f"lean-{time.monotonic_ns()}".encode()
    sub = _listen(settings, channel.decode())
    lean = LeanRedis(settings.redis_url)
    assert lean.call_many([pack(b"PUBLISH", channel, b"1"), pack(b"PUBLISH", channel, b"2")], wait=False) == []
    # The next call on that connection reads those two replies first, then its own.
    assert lean.call_many([pack(b"PUBLISH", channel, b"3")]) == [1]
    assert _received(sub, 3) == [b"1", b"2", b"3"]
    lean.close()


def test_unconfirmed_publishes_are_sent_again_when_their_connection_died(settings: Any) -> None:
    channel = f"lean-{time.monotonic_ns()}".encode()
    lean = LeanRedis(settings.redis_url)
    own_id = lean.call(pack(b"CLIENT", b"ID"))
    admin = redis_lib.Redis.from_url(settings.redis_url)
    # Killed between sending and reading: Redis may or may not have run the command, so the client
    # cannot know; the kill comes first here, so the send itself is what is lost.
    admin.client_kill_filter(_id=str(own_id))
    sub = _listen(settings, channel.decode())
    lean.call_many([pack(b"PUBLISH", channel, b"a")], wait=False)
    lean.flush()  # finds the connection dead and sends "a" again on a fresh one
    got = _received(sub, 1)
    assert got and set(got) == {b"a"}  # at least once
    assert lean.call(pack(b"CLIENT", b"ID")) != own_id
    lean.close()


def test_executor_style_publishes_arrive_in_order_once(settings: Any) -> None:
    execution_id = f"exe_lean{time.monotonic_ns()}"
    sub = _listen(settings, events.channel_for(execution_id))
    lean = LeanRedis(settings.redis_url)
    evs = [{"execution_id": execution_id, "seq": i, "type": "t", "at": "x", "data": {}} for i in range(1, 6)]
    events.publish(lean, evs[:1], wait=False)
    events.publish(lean, evs[1:3], wait=False)
    events.publish(lean, evs[3:])
    seqs = [int(m.split(b'"seq":')[1].split(b",")[0]) for m in _received(sub, 5)]
    assert seqs == [1, 2, 3, 4, 5]
    events.flush(lean)  # nothing left unconfirmed: a no-op
    lean.close()


def _commands(conn: socket.socket) -> Any:
    """RESP commands read off ``conn``, one list of arguments at a time."""
    buf = b""

    def line() -> bytes:
        nonlocal buf
        while b"\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                raise EOFError
            buf += chunk
        head, buf = buf.split(b"\r\n", 1)
        return head

    while True:
        try:
            args = []
            for _ in range(int(line()[1:])):  # *n, then n times $len and the argument
                line()
                args.append(line())
            yield args
        except EOFError:
            return


def test_a_connection_with_no_room_to_stay_confirms_at_once_and_resends_if_it_died() -> None:
    """With the idle list full, a connection is confirmed before it is closed. A Redis double
    speaking RESP closes the first connection on its PUBLISH without replying; the publish is
    sent again on a second, which answers."""
    published: list[list[bytes]] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for answer in (False, True):
            conn, _ = listener.accept()
            with conn:
                for cmd in _commands(conn):
                    if cmd[0].upper() != b"PUBLISH":
                        conn.sendall(b"+OK\r\n")  # the client's handshake (CLIENT SETINFO …)
                        continue
                    published.append(cmd)
                    if not answer:
                        break  # closed with the reply unsent
                    conn.sendall(b":1\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    lean = LeanRedis(f"redis://127.0.0.1:{listener.getsockname()[1]}", max_idle=0)
    assert lean.call_many([pack(b"PUBLISH", b"ch", b"a")], wait=False) == []
    lean.close()
    server.join(5)
    listener.close()
    assert published == [[b"PUBLISH", b"ch", b"a"]] * 2


def test_a_call_resending_what_a_dead_connection_left_unconfirmed_gets_its_own_replies(settings: Any) -> None:
    """The resent commands' replies are not the caller's: a call made after a connection died
    with unconfirmed publishes on it gets exactly the replies to its own commands."""
    key = f"lean-own-{time.monotonic_ns()}".encode()
    channel = f"lean-{time.monotonic_ns()}".encode()
    admin = redis_lib.Redis.from_url(settings.redis_url)
    admin.set(key, b"v")
    lean = LeanRedis(settings.redis_url)
    own_id = lean.call(pack(b"CLIENT", b"ID"))
    admin.client_kill_filter(_id=str(own_id))
    sub = _listen(settings, channel.decode())
    lean.call_many([pack(b"PUBLISH", channel, b"a")], wait=False)  # on the dead connection
    assert lean.call(pack(b"GET", key)) == b"v"
    assert lean.call_many([pack(b"GET", key), pack(b"EXISTS", key)]) == [b"v", 1]
    assert set(_received(sub, 1)) == {b"a"}  # and the unconfirmed publish went out again
    lean.close()
    admin.delete(key)


# WARDEN_LEAN_REDIS=0: the same commands through redis-py's own client (the reference path).


def test_the_plain_path_answers_as_the_lean_one(settings: Any) -> None:
    """Replies in order, in the same types, an error reply in its place (not raised)."""
    key = f"lean-plain-{time.monotonic_ns()}".encode()
    commands = [pack(b"LPUSH", key, b"a"), pack(b"LPUSH", key, b"b"), pack(b"LRANGE", key, b"0", b"-1"),
                pack(b"EVALSHA", b"0" * 40, b"0"), pack(b"GET", key + b"-none"), pack(b"DEL", key)]
    lean, plain = LeanRedis(settings.redis_url, plain=False), LeanRedis(settings.redis_url, plain=True)
    try:
        got_lean, got_plain = lean.call_many(commands), plain.call_many(commands)
    finally:
        lean.close()
        plain.close()
    assert got_lean[:3] == got_plain[:3] == [1, 2, [b"b", b"a"]]
    assert got_lean[4:] == got_plain[4:] == [None, 1]
    assert all(isinstance(r[3], redis_lib.exceptions.NoScriptError) for r in (got_lean, got_plain))


def test_the_plain_path_delivers_publishes_that_do_not_wait(settings: Any) -> None:
    channel = f"lean-plain-{time.monotonic_ns()}".encode()
    sub = _listen(settings, channel.decode())
    plain = LeanRedis(settings.redis_url, plain=True)
    try:
        plain.call_many([pack(b"PUBLISH", channel, b"%d" % i) for i in range(3)], wait=False)
        plain.flush()
        assert _received(sub, 3) == [b"0", b"1", b"2"]
    finally:
        plain.close()
        sub.close()


def test_the_setting_chooses_the_path(settings: Any, monkeypatch: Any) -> None:
    """Off, commands go through redis-py's client, which takes them as arguments: a command not
    made by pack() is refused there (and still sent as written on the lean path)."""
    raw = b"*1\r\n$4\r\nPING\r\n"
    monkeypatch.setenv("WARDEN_LEAN_REDIS", "0")
    off = LeanRedis(settings.redis_url)
    monkeypatch.setenv("WARDEN_LEAN_REDIS", "1")
    on = LeanRedis(settings.redis_url)
    try:
        assert off.call(pack(b"PING")) == on.call(pack(b"PING")) == b"PONG"
        assert on.call(raw) == b"PONG"
        try:
            off.call(raw)
        except TypeError as exc:
            assert "pack()" in str(exc)
        else:
            raise AssertionError("a raw command went through the plain path")
    finally:
        off.close()
        on.close()


def test_rate_limit_and_run_messages_through_the_plain_path(settings: Any, celery_app: Any,
                                                            monkeypatch: Any) -> None:
    """The callers of the lean path on the plain one: the rate limit's script (loaded again
    after a SCRIPT FLUSH, its NOSCRIPT reply read in place) and the relay's pipelined LPUSHes."""
    from api.ratelimit import TokenBucket
    from shared.celery_publish import Publisher

    client = redis_lib.Redis.from_url(settings.redis_url)
    client.script_flush()
    bucket = TokenBucket(LeanRedis(settings.redis_url, plain=True), rate_per_s=1.0, burst=2)
    name = f"plain-{time.monotonic_ns()}"
    assert [bucket.hit(name).allowed for _ in range(3)] == [True, True, False]

    monkeypatch.setenv("WARDEN_LEAN_REDIS", "0")
    queue = f"plain-q-{time.monotonic_ns()}"
    publisher = Publisher(celery_app, {"max_retries": 0})
    assert publisher._lean is not None and publisher._lean._plain is not None
    rows = [(i, "warden.noop", [i], queue) for i in range(1, 5)]
    try:
        assert publisher.publish(rows) == ([1, 2, 3, 4], None)
        assert client.llen(queue) == 4  # the first through send_task (it declares), the rest pipelined
    finally:
        client.delete(queue)
