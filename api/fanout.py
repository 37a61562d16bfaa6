"""One Redis pub/sub subscription per API process, fanned out to the process's local sockets.

Workers only publish (``shared.events.publish``); every web process runs one :class:`Hub`, whose
background listener (a thread, which gunicorn's gevent worker turns into a greenlet by
monkey-patching) pushes each message into the queue of every local :class:`Subscription` on that
channel. The hub is keyed by channel name and knows nothing about executions, so
``/ws/notifications`` (``notifications:<workspace_id>``) and ``/ws/workflows/<id>`` can reuse it
by adding their pattern.

Pub/sub forgets. Whenever the hub (re)subscribes, after a Redis failure or on first start, it
pushes :data:`RESYNC` to every subscription: "messages may have been lost, re-read the source of
truth" (PostgreSQL for execution events). A consumer that falls too far behind gets its backlog
dropped and a :data:`RESYNC` in its place, so memory stays bounded and nothing is lost.
Handlers wait without a timer (the per-delivery hot path); a ticker wakes the idle ones.

Pattern subscribe rather than per-channel SUBSCRIBE/UNSUBSCRIBE: registering a socket is then a
dict update with no Redis round trip, so "subscribed" is true the moment :meth:`Hub.subscribe`
returns (the ordering the no-gap replay depends on), and no command is ever written to the
pub/sub connection while the listener is blocked reading it. The cost is that every process
receives every execution's events; a message for a channel with no local subscriber is dropped
after one dict lookup, before it is even parsed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import random
import re
import socket
import struct
import threading
from collections import deque
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.db import loads_json
from shared.revocation import EPOCH_KEY

log = logging.getLogger(__name__)

# Probe an idle Redis connection after 10 s, every 5 s, give up after 3 misses (Linux names).
_KEEPALIVE = {getattr(socket, name): value for name, value in
              (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)) if hasattr(socket, name)}


# The head every execution event is published with (shared.events.event_dict's key order, with or
# without spaces): its seq and type are read from the text, and the payload is parsed only if a
# consumer asks for it. The per-socket path needs just those two, and parsing the whole event was
# the biggest part of the fan-out's cost per message.
_EVENT_HEAD = re.compile(r'\{"execution_id": ?"[^"\\]*", ?"seq": ?(\d+), ?"type": ?"([^"\\]*)"')


def text_frame(text: str) -> bytes:
    """``text`` as one final, unmasked WebSocket text frame (RFC 6455 §5.2): what a server writes
    when no extension was negotiated, byte for byte what wsproto's ``send_data`` produces then
    (``tests/api/test_ws_direct.py``). Written here so that a message going to many sockets
    is framed once rather than once per socket; wsproto frames per connection."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Message:
    """One published message, read once and shared by every local subscriber."""

    __slots__ = ("channel", "text", "seq", "type", "_payload", "_frame")

    def __init__(self, channel: str, text: str, payload: dict[str, Any] | None = None, *,
                 seq: Any = None, type_: Any = None) -> None:
        self.channel = channel
        self.text = text  # the JSON exactly as published: sent to clients as-is, never re-serialised
        self._payload = payload
        self._frame: bytes | None = None
        if payload is not None:
            seq, type_ = payload.get("seq"), payload.get("type")
        self.seq, self.type = seq, type_

    @classmethod
    def parse(cls, channel: str, text: str) -> Message | None:
        """None when ``text`` is not a JSON object."""
        head = _EVENT_HEAD.match(text)
        if head is not None:
            return cls(channel, text, seq=int(head[1]), type_=head[2])
        try:
            payload = loads_json(text)  # orjson where exact
        except ValueError:
            log.warning("fan-out dropped a message that is not JSON on %s", channel)
            return None
        return cls(channel, text, payload) if isinstance(payload, dict) else None

    @property
    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            try:
                parsed = loads_json(self.text)
            except ValueError:
                parsed = None
            self._payload = parsed if isinstance(parsed, dict) else {}
        return self._payload

    @property
    def frame(self) -> bytes:
        """:attr:`text` as a WebSocket frame, built on first use and shared by every socket."""
        if self._frame is None:
            self._frame = text_frame(self.text)
        return self._frame


class _Resync:
    def __repr__(self) -> str:
        return "RESYNC"


#: Marker pushed to a subscription when messages may have been lost (hub reconnected, or the
#: subscriber fell behind and its backlog was dropped). The consumer re-reads its source.
RESYNC = _Resync()


class _KeyCheck:
    def __repr__(self) -> str:
        return "KEYCHECK"


#: Marker pushed to every subscription when an API key was revoked somewhere (the revocation
#: counter in Redis moved, shared/revocation.py): each stream checks that its own key is still
#: active and closes if not.
KEYCHECK = _KeyCheck()
Marker = _Resync | _KeyCheck


_UNREAD = object()


class Sink(Protocol):
    def offer(self, item: Message | Marker) -> bool:
        """Deliver ``item`` now, from the listener, without blocking; False to have it queued."""


class Subscription:
    """A per-socket queue. :meth:`push` is called by the hub's listener, :meth:`get` by the one
    socket handler that owns it.

    While its handler is parked in :meth:`get` with nothing pending, the handler may attach a
    :class:`Sink` (``sink``): the listener then offers it each message first and queues only
    what it declines. Waking a handler costs more than the send it makes (an event, a switch
    there and back, the loop around it), so delivering on the listener is how one process keeps
    up with thousands of sockets. The sink must never block the listener, and must detach
    itself (``sink = None``) when it declines, so that nothing offered later overtakes what was
    queued."""

    __slots__ = ("channel", "_items", "_wake", "_max", "pushed", "sink", "pending_bytes")

    def __init__(self, channel: str, max_pending: int) -> None:
        self.channel = channel
        self._items: deque[Message | Marker] = deque()
        # Text queued and not yet taken by the handler: part of how far behind its client is.
        self.pending_bytes = 0
        self._wake = threading.Event()
        self._max = max_pending
        self.pushed = False  # set by push, cleared by the hub's tick: only idle sockets get ticks
        self.sink: Sink | None = None

    @property
    def pending(self) -> bool:
        return bool(self._items)

    def push(self, item: Message | Marker) -> None:
        if len(self._items) >= self._max:
            # A consumer this far behind would make us hold unbounded memory: drop its backlog
            # and let it re-read the source of truth instead.
            self._items.clear()
            self.pending_bytes = 0
            item = RESYNC
        if type(item) is Message:
            self.pending_bytes += len(item.text)
        self._items.append(item)
        self.pushed = True
        self._wake.set()  # always after append: a waiter that wakes finds the item

    def wake(self) -> None:
        """Make a waiting :meth:`get` return (possibly empty-handed)."""
        self._wake.set()

    def get(self, timeout: float | None = None) -> list[Message | Marker]:
        """Everything pending, waiting when nothing is until an item, a :meth:`wake` (the hub's
        tick) or ``timeout``; may return []. Untimed by default: a timed wait arms a timer on
        every call, and this is the per-delivery hot path."""
        if not self._items:
            self._wake.wait(timeout)
        # Clear before draining: an item pushed after this point sets the event again, so the
        # next get() cannot sleep on it (no lost wake-up).
        self._wake.clear()
        items = self._items
        out: list[Message | Marker] = []
        try:  # as many as are there now (an item pushed meanwhile stays for the next get)
            for _ in range(len(items)):
                item = items.popleft()
                if type(item) is Message:
                    self.pending_bytes = max(0, self.pending_bytes - len(item.text))
                out.append(item)
        except IndexError:  # the listener dropped the backlog meanwhile; its RESYNC is queued
            pass
        return out


class Hub:
    """One pattern subscription and its listener; ``subscribe(channel)`` for each local socket."""

    def __init__(self, redis_url: str, patterns: tuple[str, ...], *, max_pending: int = 1000,
                 backoff_base_s: float = 0.1, backoff_cap_s: float = 5.0, tick_s: float = 5.0,
                 name: str = "ws-fanout", revocation_poll_s: float = 1.0) -> None:
        if not patterns:
            raise ValueError("a hub needs at least one channel pattern")
        self.redis_url = redis_url
        self.patterns = tuple(patterns)
        self.max_pending = max_pending
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.tick_s = tick_s  # every subscription is woken this often (idle checks, gone clients)
        # The revocation counter is read this often (one GET per process): a revoked key's open
        # streams are told (KEYCHECK) within about this long.
        self.revocation_poll_s = revocation_poll_s
        self._epoch: bytes | None | object = _UNREAD
        self.name = name
        # Copy-on-write tuples: the listener reads self._subs[channel] without a lock (one atomic
        # dict lookup, then iterates an immutable tuple); writers replace tuples under the lock.
        self._subs: dict[str, tuple[Subscription, ...]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._pubsub: Any = None
        self._pid = 0
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.subscribed_count = 0  # how many times the patterns were (re)subscribed; for tests/metrics

    # -- sockets -------------------------------------------------------------------------------
    def subscribe(self, channel: str) -> Subscription:
        """Register a local consumer. Every message the listener handles from now on is queued
        for it; the caller replays what came before from the source of truth."""
        if not any(fnmatch.fnmatchcase(channel, p) for p in self.patterns):
            raise ValueError(f"channel {channel!r} matches none of {self.patterns}")
        self._ensure_started()
        sub = Subscription(channel, self.max_pending)
        with self._lock:
            self._subs[channel] = self._subs.get(channel, ()) + (sub,)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            rest = tuple(s for s in self._subs.get(sub.channel, ()) if s is not sub)
            if rest:
                self._subs[sub.channel] = rest
            else:
                self._subs.pop(sub.channel, None)

    def count(self, channel: str | None = None) -> int:
        """Local subscriptions on ``channel`` (all channels when None)."""
        if channel is not None:
            return len(self._subs.get(channel, ()))
        return sum(len(v) for v in self._subs.values())

    # -- lifecycle -----------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid:
            return
        with self._lock:
            if self._thread is not None and self._pid == pid:
                return
            if self._pid != pid:  # forked after start: the parent's listener and sockets are not ours
                self._subs = {}
                self.connected.clear()
            self._stop.clear()
            self._pid = pid
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            self._ticker = threading.Thread(target=self._tick, name=f"{self.name}-tick", daemon=True)
            self._ticker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            # The listener is blocked reading: closing its socket is what wakes it.
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.connection.disconnect()
        for thread in (self._thread, self._ticker):
            if thread is not None and thread.is_alive():
                thread.join(timeout)
        self._thread = self._ticker = None
        self.connected.clear()

    def _tick(self) -> None:
        """Wake each subscription that received nothing for ``tick_s`` (so within 2×``tick_s``
        at worst): its handler then notices a vanished client and keeps its quiet-time checks.
        Busy subscriptions are skipped (their handler wakes anyway), and the rest are woken in
        5 slices, so that a thousand idle sockets never wake in one burst."""
        slices, k = 5, 0
        next_tick = next_poll = 0.0
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=2,
                                      retry=Retry(NoBackoff(), 0))
        elapsed = 0.0
        while True:
            step = min(min(self.tick_s, 5.0) / slices, self.revocation_poll_s)  # read each time: tests change it
            if self._stop.wait(step):
                break
            elapsed += step
            if elapsed >= next_poll:
                next_poll = elapsed + self.revocation_poll_s
                self._poll_revocations(client)
            if elapsed < next_tick:
                continue
            next_tick = elapsed + min(self.tick_s, 5.0) / slices
            k += 1
            for subs in tuple(self._subs.values()):
                for sub in subs:
                    if (id(sub) >> 4) % slices != k % slices:
                        continue
                    if sub.pushed:
                        sub.pushed = False
                    else:
                        sub.wake()
        client.close()

    def _poll_revocations(self, client: Any) -> None:
        try:
            epoch = client.get(EPOCH_KEY)
        except (redis.RedisError, OSError):
            return  # the hub's RESYNC after Redis returns makes every stream check its key too
        if epoch == self._epoch:
            return
        # Moved (or read for the first time: a revocation may have come between a stream's
        # connect-time check and now, so the first reading also has them check).
        self._epoch = epoch
        for subs in tuple(self._subs.values()):
            for sub in subs:
                sub.push(KEYCHECK)

    # -- listener ------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._listen()
                attempt = 0
            except (redis.RedisError, OSError) as exc:
                self.connected.clear()
                delay = min(self.backoff_cap_s, self.backoff_base_s * (2 ** attempt))
                delay *= random.uniform(0.5, 1.0)  # jitter: processes must not reconnect in lockstep
                attempt = min(attempt + 1, 30)
                log.warning("fan-out lost Redis (%s: %s); reconnecting in %.2fs",
                            type(exc).__name__, exc, delay)
                self._stop.wait(delay)
            except Exception:  # a bug must not silently end live delivery for the whole process
                self.connected.clear()
                log.exception("fan-out listener failed; restarting")
                self._stop.wait(self.backoff_cap_s)

    def _listen(self) -> None:
        # retries=0: redis-py would otherwise reconnect and resubscribe behind our back, and the
        # messages published meanwhile would be lost without anyone being told to resync.
        # The read below blocks with no timeout (the cheapest read per message); a Redis that
        # closes or resets the connection fails it at once, and TCP keepalive fails it within
        # ~25 s when the peer silently vanished.
        client = redis.Redis.from_url(self.redis_url, decode_responses=True, socket_connect_timeout=3,
                                      socket_keepalive=True, socket_keepalive_options=_KEEPALIVE,
                                      retry=Retry(NoBackoff(), 0))
        pubsub = self._pubsub = client.pubsub()
        try:
            pubsub.psubscribe(*self.patterns)
            pending = set(self.patterns)
            while not self._stop.is_set():
                msg = pubsub.get_message(timeout=None)
                if msg is None:
                    continue
                kind = msg["type"]
                if kind == "pmessage":
                    self._dispatch(msg["channel"], msg["data"])
                elif kind == "psubscribe":
                    # Confirmations arrive once per pattern. Only when all are in is every later
                    # publish guaranteed to reach us; then every local consumer re-reads its
                    # source to cover whatever was published before.
                    pending.discard(msg["channel"])
                    if not pending:
                        pending = set(self.patterns)
                        self._resubscribed()
        finally:
            self.connected.clear()
            self._pubsub = None
            try:
                pubsub.close()
                client.close()
            except (redis.RedisError, OSError):
                pass

    def _resubscribed(self) -> None:
        with self._lock:
            self.subscribed_count += 1
            self.connected.set()
            for subs in self._subs.values():
                for sub in subs:
                    sub.push(RESYNC)
        log.info("fan-out subscribed to %s", ", ".join(self.patterns))

    def _dispatch(self, channel: str, data: str) -> None:
        subs = self._subs.get(channel)
        if not subs:
            return  # nobody here watches this channel: not even parsed
        item = Message.parse(channel, data)  # once per message, not per socket
        if item is None:
            return
        for sub in subs:
            sink = sub.sink
            if sink is None or sub._items or not sink.offer(item):
                sub.push(item)
