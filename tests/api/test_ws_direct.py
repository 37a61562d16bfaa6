"""Live events delivered on the fan-out's listener (``api.ws._Direct``): frames built once per
message are the bytes wsproto would write, and whatever the kernel takes (all of a frame, part
of it, none) the client reads every event once, in order, in well-formed frames."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage

from api.fanout import RESYNC, Message, Subscription, text_frame
from api.ws import _Direct


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300) | st.sampled_from(["x" * 125, "x" * 126, "é" * 63, "x" * 65535, "x" * 65536]))
def test_text_frame_is_what_wsproto_writes(text: str) -> None:
    assert text_frame(text) == Connection(ConnectionType.SERVER).send(TextMessage(data=text))


def _event(seq: int, type_: str = "step", size: int = 0) -> Message:
    text = json.dumps({"execution_id": "exec_1", "seq": seq, "type": type_, "at": "t", "data": {"p": "x" * size}},
                      separators=(",", ":"))
    msg = Message.parse("executions:exec_1", text)
    assert msg is not None
    return msg


def _frames(data: bytes) -> list[dict]:
    out, pos = [], 0
    while pos < len(data):
        assert data[pos] == 0x81  # final text frame, nothing torn or interleaved
        n, head = data[pos + 1], 2
        if n == 126:
            n, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        out.append(json.loads(data[pos + head:pos + head + n]))
        pos += head + n
    return out


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(0.5)
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def test_in_sequence_events_go_straight_out_and_the_rest_is_declined() -> None:
    server, client = socket.socketpair()
    sub = Subscription("executions:exec_1", 100)
    direct = _Direct(sub, server)
    direct.attach(4)
    assert sub.sink is direct
    assert direct.offer(_event(5)) and direct.offer(_event(6))
    assert direct.offer(_event(6))  # a repeated publish is dropped, not sent again
    assert direct.offer(_event(7, "execution.succeeded")) is False  # the handler sends it and closes
    assert sub.sink is None and direct.offer(_event(7)) is False  # detached: later ones queue behind
    assert direct.detach() == (6, b"", 0)

    direct.attach(6)
    assert direct.offer(_event(9)) is False  # a gap: the handler reads the store
    direct.attach(6)
    assert direct.offer(RESYNC) is False
    sub.push(_event(7))
    direct.attach(6)
    assert sub.sink is None  # something is queued: the handler drains it first
    assert [e["seq"] for e in _frames(_read_all(client))] == [5, 6]
    server.close()
    client.close()


def test_a_full_send_buffer_hands_the_torn_frame_to_the_handler() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # TCP: the kernel takes part of a frame
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.setblocking(False)
    sub = Subscription("executions:exec_1", 100)
    direct = _Direct(sub, server)
    direct.attach(1)
    seq = 1
    while direct.offer(_event(seq + 1, size=1500)):  # the client reads nothing meanwhile
        seq += 1
    last, rest, rest_seq = direct.detach()
    assert last == seq and sub.sink is None
    assert rest, "the buffer filled in the middle of a frame"
    server.setblocking(True)
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_read_all, client)  # the client catches up
        assert rest_seq == seq + 1
        server.sendall(rest)  # what the handler does (ExecutionStream._write): the tail goes out first
        last = rest_seq
        server.sendall(_event(last + 1).frame)  # and then, in order, the next event
        received = [e["seq"] for e in _frames(reading.result())]
    assert received == list(range(2, last + 2))
    server.close()
    client.close()


def test_a_broken_socket_is_declined_for_the_handler_to_find() -> None:
    server, client = socket.socketpair()
    client.close()
    sub = Subscription("executions:exec_1", 100)
    direct = _Direct(sub, server)
    direct.attach(1)
    assert direct.offer(_event(2)) is False
    assert direct.detach() == (1, b"", 0)
    server.close()
