"""A TCP proxy in front of PostgreSQL that loses one answer: it forwards everything until a query
containing ``marker`` has gone to the server, then keeps the server's answer from the client
until the server says it is ready for the next query (the statement has run and, in autocommit,
committed), and closes both connections. The client sees its connection drop after sending the
statement, as when a network link or PostgreSQL's host fails right then, and cannot know whether
the statement committed. Once: later connections pass through untouched."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from psycopg2.extensions import make_dsn, parse_dsn

READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery, its status byte follows


class AnswerCut:
    def __init__(self, database_url: str, marker: bytes) -> None:
        params = parse_dsn(database_url)
        host, port = params.get("host") or "127.0.0.1", int(params.get("port") or 5432)
        self._upstream: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port)))
        self.marker = marker
        self.cut = threading.Event()  # set once an answer was lost
        self._armed = True
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = make_dsn(database_url, host="127.0.0.1", port=str(self._listener.getsockname()[1]))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(self._upstream[0], socket.SOCK_STREAM)
            server.connect(self._upstream[1])
            withheld = threading.Event()
            threading.Thread(target=self._to_server, args=(client, server, withheld), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, withheld), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket, withheld: threading.Event) -> None:
        seen = b""
        while data := _recv(client):
            seen = (seen + data)[-(len(self.marker) + 65536):]
            if self.marker in seen:
                with self._lock:
                    if self._armed:
                        self._armed = False
                        withheld.set()  # before the statement leaves: none of its answer gets through
            with contextlib.suppress(OSError):
                server.sendall(data)
        _close(server)

    def _to_client(self, server: socket.socket, client: socket.socket, withheld: threading.Event) -> None:
        held = b""
        while data := _recv(server):
            if not withheld.is_set():
                with contextlib.suppress(OSError):
                    client.sendall(data)
                continue
            held += data
            if READY in held:  # the statement has run (and committed): drop the connection now
                self.cut.set()
                break
        _close(client)
        _close(server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
