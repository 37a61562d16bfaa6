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

import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
from flask import Blueprint, Flask, current_app, g, request
from flask_sock import Sock
from prometheus_client import Counter

from api.fanout import RESYNC, Hub, Message, Subscription, text_frame
from api.services import Services, services
from shared.errors import BadRequest, NotFound, ServiceUnavailable, Unauthorized
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
    sock.init_app(app)
    app.register_blueprint(bp)


def stream_state(app: Flask | None = None) -> StreamState:
    return (app or current_app).extensions["warden.ws"]  # type: ignore[no-any-return]


# -- before the upgrade ------------------------------------------------------------------------
def _workspace_for(svc: Services, resource_id: str) -> str:
    """The workspace the caller's credentials grant for ``resource_id``; 401 otherwise."""
    token = request.args.get("token")
    if token and (grant := svc.tokens.check(token, resource_id)):
        return _granted(svc, grant)
    scheme, _, cred = request.headers.get("Authorization", "").partition(" ")
    cred = cred.strip()
    if scheme.lower() == "bearer" and cred:
        if workspaces.key_prefix(cred) is not None:
            principal = workspaces.authenticate(svc.db, cred)
            if principal is not None:
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
    return workspace_id


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
    stream = ExecutionStream(ws, services(), stream_state(), execution_id, g.ws_workspace_id, g.ws_after,
                             plain=_plain_frames(ws))
    stream.run(terminal_at_connect=g.ws_terminal)


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def _plain_frames(ws: Any) -> bool:
    """Whether our own frames may be written to this connection's socket: no extension was asked
    for (simple-websocket accepts permessage-deflate when offered, and then frames differ) and
    the socket is a plain TCP one (not TLS) on a platform with non-blocking sends."""
    return (_DONTWAIT != 0 and not request.headers.get("Sec-WebSocket-Extensions")
            and isinstance(ws.sock, socket.socket) and not hasattr(ws.sock, "cipher"))


class _Direct:
    """Delivers live events on the hub's listener while the handler is parked (see
    :class:`api.fanout.Subscription`): the next event in sequence is written straight to the
    socket if the kernel takes the whole frame at once. Anything else (a gap, a repeat it
    cannot rule out, the terminal event, a RESYNC, a full send buffer, a broken socket) is
    declined and the handler takes over, detached, until it parks again.

    ``lock`` keeps the handler from writing while the listener does (threaded servers); under
    gevent the listener never yields while holding it, so the handler never waits on it."""

    __slots__ = ("sub", "raw", "lock", "last", "rest", "rest_seq")

    def __init__(self, sub: Subscription, sock: Any) -> None:
        self.sub = sub
        # gevent's socket wraps the real one; a send on it waits (switches) when the buffer is
        # full, and the listener must never wait, so write to the wrapped socket directly.
        self.raw = getattr(sock, "_sock", sock)
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
        """Stop direct delivery: (the last seq sent, a frame's unsent tail, its seq)."""
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
                if seq == self.last + 1 and item.type not in TERMINAL_EVENTS:
                    frame = item.frame
                    try:
                        n = self.raw.send(frame, _DONTWAIT)
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        n = -1  # the handler finds out what is wrong with the socket
                    if n == len(frame):
                        self.last = seq
                        self.sub.pushed = True  # busy: the hub's idle tick can skip it
                        return True
                    if n > 0:  # the tail must go out before any other byte
                        self.rest, self.rest_seq = frame[n:], seq
            self.sub.sink = None
            return False
        finally:
            self.lock.release()


class _Unavailable(Exception):
    """The store could not be read; the client should resume later from ``after``."""


class ExecutionStream:
    """One client's stream: replay, then live events, with no gap and no duplicate."""

    def __init__(self, ws: Any, svc: Services, state: StreamState, execution_id: str, workspace_id: str,
                 after: int, *, plain: bool = False) -> None:
        self.ws = ws
        self.plain = plain  # our own frames may be written to ws.sock (see _plain_frames)
        self.db = svc.db
        self.state = state
        self.execution_id = execution_id
        self.workspace_id = workspace_id
        self.last = after  # highest seq the client has (sent by us, or claimed by ?after=)
        self.done = False

    def run(self, *, terminal_at_connect: bool) -> None:
        # Order matters: subscribe BEFORE the replay read (see the module docstring).
        sub = self.state.hub.subscribe(channel_for(self.execution_id))
        try:
            self._catch_up("replay")
            if terminal_at_connect and not self.done:
                self._close(1000, "execution finished")  # terminal, everything after `after` sent
            self._live(sub)
        except _Unavailable:
            self._close(1013, f"events temporarily unavailable; reconnect with after={self.last}")
        finally:
            self.state.hub.unsubscribe(sub)

    def _live(self, sub: Subscription) -> None:
        quiet_since = time.monotonic()
        quiet_limit = random.uniform(*IDLE_CATCH_UP_S)
        direct = _Direct(sub, self.ws.sock) if self.plain else None
        while not self.done:
            if direct is not None:
                direct.attach(self.last)
            items = sub.get()  # returns [] at least every hub.tick_s: check the client, idle time
            now = time.monotonic()
            if direct is not None:
                last, rest, rest_seq = direct.detach()
                if last > self.last:
                    self.last, quiet_since = last, now  # delivered by the listener meanwhile
                if rest and not self._write(rest, rest_seq):
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
            for item in items:
                if item is RESYNC:
                    self._catch_up("resync")
                else:
                    assert isinstance(item, Message)
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
        if self.plain:
            if not self._write(frame or text_frame(text), seq):
                return
        else:
            self.ws.send(text)
            self.last = seq
        if type_ in TERMINAL_EVENTS:
            self._close(1000, "execution finished")

    def _write(self, frame: bytes, seq: int) -> bool:
        """Write a frame (or the tail of one) to the socket; False when the client is gone."""
        if not self.ws.connected:
            self.done = True
            return False
        try:
            self.ws.sock.sendall(frame)
        except OSError:  # reset or broken pipe: the client is gone
            self.done = True
            return False
        self.last = seq
        return True

    def _close(self, code: int, reason: str) -> None:
        self.done = True
        if self.ws.connected:
            self.ws.close(code, reason)

    def _catch_up(self, reason: str, *, check_status: bool = False) -> None:
        """Send every stored event after ``self.last``, page by page."""
        CATCH_UPS.labels(reason).inc()
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
