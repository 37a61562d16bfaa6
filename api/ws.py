"""WebSocket streams (flask-sock): ``GET /ws/executions/<id>?after=<seq>&token=<t>``.

Auth, checked *before* the upgrade so that a refusal is an ordinary HTTP answer in the one JSON
error envelope (``{"detail": {"message", "code"}}``), exactly like the REST API:

- credentials: the short-lived ``token`` from ``websocket_url`` (query string), or an
  ``Authorization: Bearer <api key>`` header (a stream token is accepted there too);
- none, a bad/expired token, or a token issued for another execution → **401** ``unauthorized``;
- an API key whose workspace does not own the execution (or no such execution) → **404**
  ``not_found`` (DESIGN §6: never 403); a malformed ``after`` → **400** ``invalid_after``.

Tokens are never logged: only the path (no query string) ever reaches our log lines.

Once upgraded, each message is one event ``{"execution_id","seq","type","at","data"}`` and the
client receives every event with ``seq > after`` exactly once, in order:

1. subscribe to the process's fan-out hub first, so every event published from then on is queued;
2. replay stored events with ``seq > after`` from PostgreSQL (paged);
3. drain the queue: skip ``seq <= last sent`` (already replayed), send ``last + 1`` as published
   (no DB query on this hot path), and on a gap, a hub :data:`~api.fanout.RESYNC` (Redis
   reconnected, or this socket fell behind) or a quiet spell, read what is missing from PostgreSQL;
4. while the queue is empty, let the hub's listener send ``last + 1`` itself (:class:`_Direct`):
   the same seq check, without waking this handler for each event.

Events are committed before they are published, so anything published before step 1 is found
by step 2 and anything after is queued; the seq check removes the overlap. After the terminal
event (``execution.succeeded|blocked|error|cancelled``) the server closes with **1000**; an
execution that is already terminal is replayed and closed at once. If PostgreSQL is unavailable
mid-stream the server closes with **1013** (try again later) and the reason names the ``after``
to resume from.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import random
import select
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg2
from flask import Blueprint, Flask, current_app, g, request
from flask_sock import Sock
from prometheus_client import Counter

from api.fanout import KEYCHECK, RESYNC, Hub, Message, Subscription, text_frame
from api.services import Services, services
from shared.errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, Unauthorized
from shared.events import channel_for
from shared.store import executions, workspaces

log = logging.getLogger(__name__)

sock = Sock()
bp = Blueprint("ws", __name__)

TERMINAL_EVENTS = frozenset({"execution.succeeded", "execution.blocked", "execution.error",
                             "execution.cancelled"})
PAGE = 500  # events per replay query
# A quiet stream re-reads PostgreSQL after 15-30 s (covers a publish that never happened, e.g. the
# terminal event's while Redis was down). Randomised: sockets that connected together must not
# all query at the same instant.
IDLE_CATCH_UP_S = (15.0, 30.0)

# A client sends us nothing but control frames: a data message over this closes with 1009.
MAX_CLIENT_MESSAGE = 64 * 1024
# A client this far behind (bytes written to its socket and not yet read, plus what is waiting
# for it) is closed with 1013 and resumes with ?after=<the last seq it got>: one process must
# not hold an unbounded backlog for a reader that cannot keep up.
MAX_BEHIND = 1024 * 1024
# The kernel's send buffer for a stream, fixed (Linux doubles it and stops autotuning it, which
# could otherwise hold several MiB for one socket): what it holds counts as "behind", so it must
# stay well under MAX_BEHIND for a client that reads as fast as it can.
SEND_BUFFER = 128 * 1024
# A frame the kernel has not taken any of for this long: the client is gone or wedged.
STALL_S = 60.0
CLOSE_TIMEOUT_S = 10.0  # a close frame to a client that reads nothing is given up after this

CATCH_UPS = Counter("warden_ws_catch_ups_total", "Reads of stored events after connect, by reason",
                    ["reason"])


@dataclass
class StreamState:
    """Per-app WebSocket wiring: the fan-out hub and a gate on concurrent replay queries."""

    hub: Hub
    # Under gevent a thousand sockets can resync at the same instant (Redis came back); the
    # psycopg2 pool fails rather than waits when exhausted, so replays queue here instead and
    # leave the rest of the pool to HTTP requests.
    db_gate: threading.BoundedSemaphore


def init_app(app: Flask, svc: Services) -> None:
    # One hub, one subscription per process: /ws/notifications and /ws/workflows add their
    # patterns ("notifications:*", "workflows:*") here and call hub.subscribe(channel) likewise.
    hub = Hub(svc.settings.redis_url, ("executions:*", "workflows:*", "notifications:*"), tick_s=5.0)
    app.extensions["warden.ws"] = StreamState(
        hub=hub, db_gate=threading.BoundedSemaphore(max(1, svc.settings.db_pool_max // 2)))
    # simple-websocket closes with 1009 (message too big) past this size.
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config.get("SOCK_SERVER_OPTIONS", {}),
                                         "max_message_size": MAX_CLIENT_MESSAGE}
    sock.init_app(app)
    app.register_blueprint(bp)


def stream_state(app: Flask | None = None) -> StreamState:
    return (app or current_app).extensions["warden.ws"]  # type: ignore[no-any-return]


# -- before the upgrade ------------------------------------------------------------------------
def check_origin(svc: Services) -> None:
    """Cross-site WebSocket hijacking: a browser sends ``Origin`` with every handshake and a page
    on another site could otherwise open a stream with the user's credentials. Allowed: no
    ``Origin`` (not a browser), the API's own origin (its dashboard), and the origins listed in
    ``WARDEN_WS_ALLOWED_ORIGINS`` (``*`` allows any). Anything else → **403**."""
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = svc.settings.ws_allowed_origins
    normalized = origin.strip().lower().rstrip("/")
    if "*" in allowed or normalized in allowed:
        return
    own = {request.host.lower()}
    if svc.settings.public_url:
        own.add(urlsplit(svc.settings.public_url).netloc.lower())
    if urlsplit(normalized).netloc in own and urlsplit(normalized).scheme in ("http", "https"):
        return
    raise Forbidden(f"Origin {origin[:200]!r} may not open streams here (WARDEN_WS_ALLOWED_ORIGINS lists"
                    " the allowed ones)", code="origin_not_allowed")


def _workspace_for(svc: Services, resource_id: str) -> str:
    """The workspace the caller's credentials grant for ``resource_id``; 401 otherwise. The key
    the credentials stand for is left in ``g.ws_key_id`` (its revocation closes the stream)."""
    check_origin(svc)
    g.ws_key_id = None
    token = request.args.get("token")
    if token and (grant := svc.tokens.check(token, resource_id)):
        return _granted(svc, grant)
    scheme, _, cred = request.headers.get("Authorization", "").partition(" ")
    cred = cred.strip()
    if scheme.lower() == "bearer" and cred:
        if workspaces.key_prefix(cred) is not None:
            principal = workspaces.authenticate(svc.db, cred)
            if principal is not None:
                g.ws_key_id = principal.key_id
                return principal.workspace_id
        elif grant := svc.tokens.check(cred, resource_id):
            return _granted(svc, grant)
    raise Unauthorized("Missing, invalid or expired credentials: pass the token from websocket_url"
                       " or an API key (Authorization: Bearer)", code="unauthorized")


def _granted(svc: Services, grant: tuple[str, str | None]) -> str:
    """The token's workspace, unless the key it was issued to has been revoked since."""
    workspace_id, key_id = grant
    if key_id is not None and not workspaces.key_active(svc.db, key_id):
        raise Unauthorized("The API key this token was issued to has been revoked", code="unauthorized")
    g.ws_key_id = key_id
    return workspace_id


def key_revoked(svc: Services, key_id: str | None) -> bool:
    """Whether the stream's key was revoked since it connected (on a KEYCHECK from the hub)."""
    if key_id is None:
        return False
    try:
        return not workspaces.key_active(svc.db, key_id)
    except (psycopg2.Error, ServiceUnavailable):
        return False  # cannot tell now; the hub asks again after the next revocation


class SerializedSocket:
    """Installed as ``ws.sock`` when a stream starts, so that every write to the connection goes
    out whole under one lock: simple-websocket's (pongs from its reader thread, close frames,
    ``ws.send``) and ours (frames written directly, :class:`_Direct`). Without it a pong could
    be written into the middle of a partly written frame, which the client cannot parse (RFC
    6455 allows control frames between the frames of a message, never inside one). The library
    writes with ``sock.send`` and ignores the count; here that sends everything."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        # gevent's socket wraps the real one; the listener's non-blocking sends use that.
        self.raw = getattr(inner, "_sock", inner)
        self.lock = threading.Lock()

    def send(self, data: bytes, *flags: int) -> int:
        with self.lock:
            self.inner.sendall(data, *flags)
        return len(data)

    def sendall(self, data: bytes, *flags: int) -> None:
        with self.lock:
            self.inner.sendall(data, *flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def serialize_writes(ws: Any) -> SerializedSocket:
    """Wrap the connection's socket (see :class:`SerializedSocket`); every stream calls this first."""
    if not isinstance(ws.sock, SerializedSocket):
        ws.sock = SerializedSocket(ws.sock)
    return ws.sock  # type: ignore[no-any-return]


def _unsent(raw: Any) -> int:
    """Bytes in the kernel's send queue not yet acknowledged by the client (Linux SIOCOUTQ)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(raw.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


@bp.before_request
def _authorize() -> None:
    args = request.view_args or {}
    execution_id = args.get("execution_id")
    if execution_id is None:
        return
    raw_after = request.args.get("after", "0")
    if not raw_after.isdigit() or len(raw_after) > 18:
        raise BadRequest("after must be a non-negative integer (the last seq you have)", code="invalid_after")
    svc = services()
    # Under the gate too: when an API process restarts, all its clients reconnect at once.
    with stream_state().db_gate:
        workspace_id = _workspace_for(svc, execution_id)
        execution = executions.get(svc.db, workspace_id, execution_id)
    if execution is None:
        raise NotFound(f"Execution {execution_id} not found", code="not_found")
    g.ws_workspace_id = workspace_id
    g.ws_after = int(raw_after)
    g.ws_terminal = execution.terminal


# -- after the upgrade -------------------------------------------------------------------------
@sock.route("/ws/executions/<execution_id>", bp=bp)
def execution_stream(ws: Any, execution_id: str) -> None:
    plain = _plain_frames(ws)  # before the socket is wrapped
    serialize_writes(ws)
    stream = ExecutionStream(ws, services(), stream_state(), execution_id, g.ws_workspace_id, g.ws_after,
                             plain=plain, key_id=g.ws_key_id)
    stream.run(terminal_at_connect=g.ws_terminal)


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def _plain_frames(ws: Any) -> bool:
    """Whether our own frames may be written to this connection's socket: no extension was asked
    for (simple-websocket accepts permessage-deflate when offered, and then frames differ) and
    the socket is a plain TCP one (not TLS) on a platform with non-blocking sends."""
    inner = ws.sock.inner if isinstance(ws.sock, SerializedSocket) else ws.sock
    return (_DONTWAIT != 0 and not request.headers.get("Sec-WebSocket-Extensions")
            and isinstance(inner, socket.socket) and not hasattr(inner, "cipher"))


def write_whole(ws: Any, out: SerializedSocket, view: memoryview, what: str) -> bool:
    """Write all of ``view`` to the connection (its write lock held by the caller); False when
    the client is gone. The kernel is offered the bytes without blocking and the wait for room is
    a poll, so a client that takes nothing for ``STALL_S`` is dropped rather than held forever."""
    raw = out.raw
    progress = time.monotonic()
    while view:
        if not ws.connected:
            return False
        try:
            n = raw.send(view, _DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError:  # reset or broken pipe: the client is gone
            return False
        if n:
            view, progress = view[n:], time.monotonic()
            continue
        if time.monotonic() - progress > STALL_S:
            log.info("dropping a stream of %s: its client took nothing for %ss", what, STALL_S)
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            return False
        select.select([], [raw], [], 1.0)  # cooperative under gevent (select is patched)
    return True


class BoundedSender:
    """How a stream that writes only from its handler (``/ws/notifications``, ``/ws/workflows``)
    sends: a client more than ``MAX_BEHIND`` behind (what its socket holds unread, plus what waits
    for it in ``sub``) is not written to (:meth:`send` answers "behind" and the stream closes
    1013 with where to resume), and on a plain connection a frame goes out whole without the
    handler blocking on a client that reads nothing (dropped after ``STALL_S``). Installs the
    serialized socket and the fixed send buffer; call it before the first write."""

    def __init__(self, ws: Any, what: str) -> None:
        self.plain = _plain_frames(ws)  # before the socket is wrapped
        self.ws, self.what = ws, what
        self.out = serialize_writes(ws)  # pongs never land inside a frame
        with contextlib.suppress(OSError, AttributeError):
            self.out.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def send(self, text: str, queued: int = 0) -> str:
        """Answers "sent", "behind" (nothing written: close 1013) or "gone" (the client is). ``queued``:
        the bytes waiting for this client in its subscriptions."""
        if _unsent(self.out.raw) + queued + len(text) > MAX_BEHIND:
            log.info("closing a stream of %s that fell %d bytes behind", self.what, MAX_BEHIND)
            return "behind"
        if not self.plain:
            try:
                self.ws.send(text)
            except (OSError, ConnectionError):
                return "gone"
            return "sent"
        with self.out.lock:
            ok = write_whole(self.ws, self.out, memoryview(text_frame(text)), self.what)
        return "sent" if ok else "gone"

    def close(self, code: int, reason: str) -> None:
        if self.ws.connected:
            # A client that reads nothing must not hold the handler on its close frame forever.
            with contextlib.suppress(AttributeError, OSError):
                self.out.inner.settimeout(CLOSE_TIMEOUT_S)
            with contextlib.suppress(OSError, ConnectionError):
                self.ws.close(code, reason)


class _Direct:
    """Delivers live events on the hub's listener while the handler is parked (see
    :class:`api.fanout.Subscription`): the next event in sequence is written straight to the
    socket if the kernel takes the whole frame at once. Anything else (a gap, a repeat it
    cannot rule out, the terminal event, a RESYNC, a full send buffer, a broken socket) is
    declined and the handler takes over, detached, until it parks again.

    ``lock`` keeps the handler from writing while the listener does (threaded servers); under
    gevent the listener never yields while holding it, so the handler never waits on it. The
    connection's write lock (:class:`SerializedSocket`) is only ever tried: when a pong or a
    close is being written the event is declined. A frame the kernel took only part of keeps
    that lock held until the handler has written its tail, so nothing gets in between."""

    __slots__ = ("sub", "out", "raw", "lock", "last", "rest", "rest_seq")

    def __init__(self, sub: Subscription, sock: Any) -> None:
        self.sub = sub
        self.out = sock if isinstance(sock, SerializedSocket) else SerializedSocket(sock)
        # gevent's socket wraps the real one; a send on it waits (switches) when the buffer is
        # full, and the listener must never wait, so write to the wrapped socket directly.
        self.raw = self.out.raw
        self.lock = threading.Lock()
        self.last = 0
        self.rest = b""  # the unsent tail of a frame the kernel took only part of
        self.rest_seq = 0

    def attach(self, last: int) -> None:
        with self.lock:
            self.last = last
            if not self.sub.pending:
                self.sub.sink = self

    def detach(self) -> tuple[int, bytes, int]:
        """Stop direct delivery: (the last seq sent, a frame's unsent tail, its seq). With a
        tail, the connection's write lock is still held: the caller writes it, then releases."""
        with self.lock:
            self.sub.sink = None
            rest, self.rest = self.rest, b""
            return self.last, rest, self.rest_seq

    def offer(self, item: Message | object) -> bool:
        if not self.lock.acquire(False):  # the handler is taking over
            return False
        try:
            if self.sub.sink is not self:
                return False
            if type(item) is Message:
                seq = item.seq
                if type(seq) is int and seq <= self.last:
                    return True  # a repeat (publishes are at least once): already sent
                if (seq == self.last + 1 and item.type not in TERMINAL_EVENTS
                        and self.out.lock.acquire(False)):  # not while a pong or close is written
                    frame = item.frame
                    try:
                        n = self.raw.send(frame, _DONTWAIT)
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        n = -1  # the handler finds out what is wrong with the socket
                    if n == len(frame):
                        self.out.lock.release()
                        self.last = seq
                        self.sub.pushed = True  # busy: the hub's idle tick can skip it
                        return True
                    if n > 0:  # the tail must go out before any other byte: the lock stays held
                        self.rest, self.rest_seq = frame[n:], seq
                    else:
                        self.out.lock.release()
            self.sub.sink = None
            return False
        finally:
            self.lock.release()


class _Unavailable(Exception):
    """The store could not be read; the client should resume later from ``after``."""


class ExecutionStream:
    """One client's stream: replay, then live events, with no gap and no duplicate."""

    def __init__(self, ws: Any, svc: Services, state: StreamState, execution_id: str, workspace_id: str,
                 after: int, *, plain: bool = False, key_id: str | None = None) -> None:
        self.ws = ws
        self.out = serialize_writes(ws)
        self.plain = plain  # our own frames may be written to ws.sock (see _plain_frames)
        self.svc = svc
        self.key_id = key_id
        self.db = svc.db
        self.state = state
        self.execution_id = execution_id
        self.workspace_id = workspace_id
        self.last = after  # highest seq the client has (sent by us, or claimed by ?after=)
        self.done = False
        self.owed = 0  # bytes taken from the queue and not yet written
        self.sub: Subscription | None = None
        with contextlib.suppress(OSError, AttributeError):
            self.out.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def run(self, *, terminal_at_connect: bool) -> None:
        # Order matters: subscribe BEFORE the replay read (see the module docstring).
        sub = self.sub = self.state.hub.subscribe(channel_for(self.execution_id))
        try:
            self._catch_up("replay")
            if terminal_at_connect and not self.done:
                self._close(1000, "execution finished")  # terminal, everything after `after` sent
            self._live(sub)
        except _Unavailable:
            self._close(1013, f"events temporarily unavailable; reconnect with after={self.last}")
        finally:
            self.state.hub.unsubscribe(sub)
            self.sub = None

    def _live(self, sub: Subscription) -> None:
        quiet_since = time.monotonic()
        quiet_limit = random.uniform(*IDLE_CATCH_UP_S)
        direct = _Direct(sub, self.out) if self.plain else None
        while not self.done:
            if direct is not None:
                direct.attach(self.last)
            items = sub.get()  # returns [] at least every hub.tick_s: check the client, idle time
            now = time.monotonic()
            if direct is not None:
                last, rest, rest_seq = direct.detach()
                if last > self.last:
                    self.last, quiet_since = last, now  # delivered by the listener meanwhile
                if rest and not self._write(rest, rest_seq, locked=True):
                    return
            if not self.ws.connected:
                return
            if self.ws.input_buffer:  # we expect nothing from the client; do not let it pile up
                self.ws.input_buffer.clear()
            if not items:
                if now - quiet_since >= quiet_limit:
                    quiet_since, quiet_limit = now, random.uniform(*IDLE_CATCH_UP_S)
                    self._catch_up("idle", check_status=True)
                continue
            quiet_since = now
            self.owed = sum(len(i.text) for i in items if isinstance(i, Message))
            for item in items:
                if item is RESYNC:
                    self._catch_up("resync")
                elif item is KEYCHECK:
                    if key_revoked(self.svc, self.key_id):
                        self._close(1008, "the API key of this stream was revoked")
                else:
                    assert isinstance(item, Message)
                    self.owed -= len(item.text)
                    self._on_message(item)
                if self.done:
                    return

    def _on_message(self, msg: Message) -> None:
        seq = msg.seq
        if not isinstance(seq, int) or seq <= self.last:
            return  # already sent by the replay (or not an event)
        if seq > self.last + 1:
            # A gap: an earlier publish was lost or overtaken. It was committed before this one
            # was published, so PostgreSQL has it.
            self._catch_up("gap")
            if self.done or seq <= self.last:
                return
            log.warning("event seq %s of %s published but not stored; sending it as is", seq,
                        self.execution_id)
        self._send(msg.text, seq, msg.type, msg.frame if self.plain else None)

    def _send(self, text: str, seq: int, type_: Any, frame: bytes | None = None) -> None:
        if self._behind(len(text)) > MAX_BEHIND:
            self._too_slow()
            return
        if self.plain:
            if not self._write(frame or text_frame(text), seq):
                return
        else:
            try:
                self.ws.send(text)
            except (OSError, ConnectionError):
                self.done = True
                return
            self.last = seq
        if type_ in TERMINAL_EVENTS:
            self._close(1000, "execution finished")

    def _behind(self, size: int) -> int:
        """How far behind the client would be with ``size`` more bytes: what its socket holds
        unread, what this handler has in hand, what waits in its queue."""
        queued = self.sub.pending_bytes if self.sub is not None else 0
        return _unsent(self.out.raw) + self.owed + queued + size

    def _too_slow(self) -> None:
        log.info("closing a stream of %s that fell %d bytes behind", self.execution_id, MAX_BEHIND)
        self._close(1013, f"client too far behind; reconnect with after={self.last}")

    def _write(self, frame: bytes, seq: int, *, locked: bool = False) -> bool:
        """Write a whole frame (``locked``: the tail of one the listener began, the connection's
        write lock already held) under the write lock; False when the client is gone. The
        kernel is offered the bytes without blocking and the wait for room is a poll, so a
        client that takes nothing for ``STALL_S`` is dropped rather than held forever."""
        if not locked:
            self.out.lock.acquire()
        try:
            ok = self._write_locked(memoryview(frame))
        finally:
            self.out.lock.release()
        if ok:
            self.last = seq
        else:
            self.done = True
        return ok

    def _write_locked(self, view: memoryview) -> bool:
        return write_whole(self.ws, self.out, view, self.execution_id)

    def _close(self, code: int, reason: str) -> None:
        self.done = True
        if self.ws.connected:
            # A client that reads nothing must not hold this handler on its close frame forever.
            with contextlib.suppress(AttributeError, OSError):
                self.out.inner.settimeout(CLOSE_TIMEOUT_S)
            with contextlib.suppress(OSError, ConnectionError):
                self.ws.close(code, reason)

    def _catch_up(self, reason: str, *, check_status: bool = False) -> None:
        """Send every stored event after ``self.last``, page by page."""
        CATCH_UPS.labels(reason).inc()
        # What is read from the store here is not counted as owed: the store is the backlog,
        # read at the pace the client takes it.
        while not self.done:
            page, terminal = self._read(check_status)
            for ev in page:
                if ev["seq"] > self.last:
                    self._send(json.dumps(ev, separators=(",", ":")), ev["seq"], ev["type"])
                    if self.done:
                        return
            if len(page) < PAGE:
                if terminal and not self.done:
                    self._close(1000, "execution finished")  # terminal status without a terminal event
                return

    def _read(self, check_status: bool) -> tuple[list[dict[str, Any]], bool]:
        try:
            with self.state.db_gate:
                terminal = False
                if check_status:
                    ex = executions.get(self.db, self.workspace_id, self.execution_id)
                    terminal = ex is None or ex.terminal
                page = executions.events_page(self.db, self.workspace_id, self.execution_id,
                                              after=self.last, limit=PAGE)
        except (psycopg2.Error, ServiceUnavailable) as exc:
            log.warning("replay of %s failed: %s", self.execution_id, type(exc).__name__)
            raise _Unavailable from None
        if page is None:  # the execution is gone
            return [], True
        return page, terminal
