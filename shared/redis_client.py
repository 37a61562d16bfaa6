"""Redis clients (one pool per process, created lazily, re-created after fork), and the lean
request/reply path for the hottest commands (rate-limit checks, event publishes).

Redis hung (a stopped process, a dead host whose connections the kernel still accepts). The lean
path of :class:`RedisHandle`, which every API request takes (the rate limit), waits at most
``LEAN_TIMEOUT_S`` on a socket, and after a failure fails fast: later calls raise at once, with
no network wait, until a background probe gets a PING answered. So only the requests in flight
when Redis hangs wait, and for a fraction of a second; the rest answer as if Redis were down
(the rate limit fails open; intake's outbox keeps the runs for the relay).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence

import redis

log = logging.getLogger(__name__)

#: Socket connect and read timeout of a request's own Redis round trips (the lean path).
LEAN_TIMEOUT_S = 0.5


class _Watch:
    """Whether one Redis (a URL) answers, as this process last saw it: tripped by any lean call
    that failed on the network, cleared by a background probe once a PING is answered. Shared by
    every LeanRedis of the URL in the process (the rate limit's, the event publishes'), so that
    the request paths that wait on Redis longer (a compile's reply, a replay's, a workflow's
    publish, a /metrics scrape) can answer at once instead of waiting on a dead socket."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down = False
        self._lock = threading.Lock()

    def trip(self) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
        threading.Thread(target=self._probe, daemon=True, name="redis-probe").start()

    def _probe(self) -> None:
        pool = redis.ConnectionPool.from_url(self.url, protocol=2, socket_connect_timeout=LEAN_TIMEOUT_S,
                                             socket_timeout=LEAN_TIMEOUT_S)
        pause = 0.05
        while True:
            conn = pool.connection_class(**pool.connection_kwargs)
            try:
                conn.connect()
                conn.send_command("PING")
                conn.read_response()
                self.down = False
                log.info("Redis answers again")
                return
            except (redis.RedisError, OSError):
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
            finally:
                conn.disconnect()


_WATCHES: dict[tuple[int, str], _Watch] = {}
_WATCHES_LOCK = threading.Lock()


def _watch(url: str) -> _Watch:
    key = (os.getpid(), url)  # a forked child probes for itself
    w = _WATCHES.get(key)
    if w is None:
        with _WATCHES_LOCK:
            w = _WATCHES.setdefault(key, _Watch(url))
    return w


def answering(url: str) -> bool:
    """False while this process's last lean round trip to ``url`` failed on the network and no
    PING has been answered since (see :class:`_Watch`)."""
    return not _watch(url).down


class RedisHandle:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | None = None
        self._lean: LeanRedis | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = redis.Redis.from_url(
                        self.url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30)
                    self._pid = pid
        return self._client

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    @property
    def answering(self) -> bool:
        """See :func:`answering`: False means a wait on this Redis would be on a dead socket."""
        return answering(self.url)

    @property
    def lean(self) -> LeanRedis:
        """This URL's :class:`LeanRedis` (one per process)."""
        lean = self._lean
        if lean is None:
            with self._lock:
                if self._lean is None:
                    self._lean = LeanRedis(self.url, timeout_s=LEAN_TIMEOUT_S, fail_fast=True)
                lean = self._lean
        return lean


class Packed(bytes):
    """A command in RESP, ready to send, with its arguments (``args``) for redis-py's client when
    the lean path is off (``WARDEN_LEAN_REDIS=0``)."""

    args: tuple[bytes, ...]


def pack(*args: bytes) -> Packed:
    """One command in RESP, ready to send."""
    packed = Packed(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    packed.args = args
    return packed


def _lean_setting() -> bool:
    """``WARDEN_LEAN_REDIS`` (shared.config; on unless set to 0)."""
    from shared.config import ConfigError, load_settings

    try:
        return load_settings().lean_redis
    except ConfigError:  # another setting is wrong: the process entry says so; not this one's to refuse
        return True


class LeanRedis:
    """Request/reply on idle connections kept per process (LIFO, at most ``max_idle``).

    Connections are redis-py's own (the URL decides TCP, TLS or a Unix socket, AUTH and db), only
    the per-command path is skipped. A reused connection that fails to connect, send or read is
    dropped and the command tried once more on a fresh one (a timeout is not retried); any other
    failure drops the connection and raises, so no connection with an unread reply is reused.

    ``call_many(..., wait=False)`` sends without waiting: the replies are read at that
    connection's next use (or :meth:`flush`), when they have long arrived, so a caller that
    publishes several times in a row waits for Redis once. Until then the commands are kept; if
    the connection turns out broken they are sent again with the next ones on a fresh
    connection, so each is delivered at least once (event subscribers drop repeated ``seq``).

    Relied on (redis-py 8.1, pinned in pyproject.toml): ``ConnectionPool.connection_class`` and
    ``connection_kwargs``, ``Connection.connect``, ``send_packed_command``,
    ``read_response(disconnect_on_error=False)`` and ``disconnect``; the unread commands are kept
    in an attribute of ours on redis-py's connection object (``_lean_unread``).

    ``plain`` (default: ``WARDEN_LEAN_REDIS=0``): the same commands through redis-py's own client
    instead, a pipeline per call (its parsing, retries and connection pool, bounded at
    ``max_idle`` connections), ``wait=False`` waiting like any call: the library's reference path,
    to measure the lean one against and to fall back to. Commands must then come from
    :func:`pack` (it keeps their arguments).
    """

    def __init__(self, url: str, *, max_idle: int = 64, timeout_s: float | None = None,
                 fail_fast: bool = False, plain: bool | None = None) -> None:
        self._plain: redis.Redis | None = None
        if plain is None:
            plain = not _lean_setting()
        if plain:
            self._plain = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
                url, protocol=2, max_connections=max(1, max_idle), timeout=10,
                socket_connect_timeout=timeout_s or 3, socket_timeout=timeout_s or 10))
        self._pool = redis.ConnectionPool.from_url(url, protocol=2, socket_connect_timeout=timeout_s or 3,
                                                   socket_timeout=timeout_s or 10)
        self._max_idle = max_idle
        self._idle: list[redis.connection.AbstractConnection] = []
        self._pid = os.getpid()
        # At most max_idle calls (at least one) at once, so at most that many connections open however many
        # callers (a gevent worker's hundreds of runs publishing together): a new connection is
        # made only when none is idle, i.e. while fewer than max_idle are in use.
        self._slots = threading.BoundedSemaphore(max(1, max_idle))
        self._fail_fast = fail_fast
        self._url = url

    @property
    def down(self) -> bool:
        """Redis did not answer lately (see :func:`answering`)."""
        return _watch(self._url).down

    def call(self, packed: bytes):  # type: ignore[no-untyped-def]
        reply = self.call_many([packed])[0]
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def call_many(self, packed: Sequence[bytes], *, wait: bool = True) -> list:  # type: ignore[type-arg]
        """Pipelined: every command sent in one write, the replies read in order. An error reply
        is returned in its place (as the ResponseError), not raised. ``wait=False``: see the
        class docstring (returns [])."""
        if self._pid != os.getpid():  # forked: the parent's sockets (and probe thread) are not ours
            self._idle, self._pid = [], os.getpid()
            self._slots = threading.BoundedSemaphore(max(1, self._max_idle))
        if self._fail_fast and _watch(self._url).down:
            raise redis.ConnectionError("Redis did not answer lately; failing fast until it does")
        if self._plain is not None:
            try:
                return self._plain_many(packed)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                _watch(self._url).trip()
                raise
        slots = self._slots
        if not slots.acquire(timeout=10):
            raise redis.ConnectionError("no Redis connection free within 10 s")
        try:
            return self._call_many(packed, wait)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            _watch(self._url).trip()
            raise
        finally:
            slots.release()

    def _plain_many(self, packed: Sequence[bytes]) -> list:  # type: ignore[type-arg]
        assert self._plain is not None
        if not packed:
            return []
        pipe = self._plain.pipeline(transaction=False)
        for command in packed:
            args = getattr(command, "args", None)
            if args is None:
                raise TypeError("with WARDEN_LEAN_REDIS=0, LeanRedis commands must be made with pack()")
            pipe.execute_command(*args)
        return pipe.execute(raise_on_error=False)

    def _call_many(self, packed: Sequence[bytes], wait: bool) -> list:  # type: ignore[type-arg]
        idle = self._idle
        resent: list[bytes] = []
        if idle:
            conn = idle.pop()
            try:
                return self._roundtrip(conn, packed, wait)
            except redis.ConnectionError:
                # Stale (Redis restarted, idle timeout): once more on a fresh connection, with
                # whatever was sent on the stale one unconfirmed first; their replies are not
                # this caller's.
                resent = self._unconfirmed(conn)
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        conn.connect()
        return self._roundtrip(conn, [*resent, *packed], wait)[len(resent):]

    def flush(self) -> None:
        """Reads the replies of every earlier ``wait=False`` call, sending again what a broken
        connection left unconfirmed. Raises what that resend raises."""
        for conn in [c for c in self._idle if getattr(c, "_lean_unread", ())]:
            self._idle.remove(conn)
            try:
                self._roundtrip(conn, [], True)
            except redis.ConnectionError:
                self.call_many(self._unconfirmed(conn))

    def _roundtrip(self, conn, packed: Sequence[bytes], wait: bool) -> list:  # type: ignore[no-untyped-def, type-arg]
        replies = []
        try:
            self._confirm(conn)
            if packed:
                conn.send_packed_command(packed, check_health=False)
            if not wait:
                conn._lean_unread = packed
                packed = []
            for _ in packed:
                try:
                    replies.append(conn.read_response(disconnect_on_error=False))
                except redis.ResponseError as exc:  # read in full: the connection stays clean
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        self._release(conn)
        return replies

    def _release(self, conn) -> None:  # type: ignore[no-untyped-def]
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
            return
        # No room to keep it: confirm what it carries now, and send that again if it died.
        unread: list[bytes] = []
        try:
            self._confirm(conn)
        except redis.ConnectionError:
            unread = self._unconfirmed(conn)
        except redis.RedisError:
            pass  # a timeout: the commands may have run; not sent twice
        conn.disconnect()
        if unread:
            with contextlib.suppress(redis.RedisError, OSError):  # as a failed wait=True call would
                self._call_many(unread, True)

    @staticmethod
    def _unconfirmed(conn) -> list[bytes]:  # type: ignore[no-untyped-def]
        """Takes the commands ``conn`` sent without their replies read, to send them again."""
        unread = list(getattr(conn, "_lean_unread", ()))
        conn._lean_unread = ()
        return unread

    @staticmethod
    def _confirm(conn) -> None:  # type: ignore[no-untyped-def]
        """Reads the replies of an earlier ``wait=False`` call on ``conn``. They stay listed
        until all are read: a failure leaves them unconfirmed, for the caller to send again."""
        for _ in getattr(conn, "_lean_unread", ()):
            with contextlib.suppress(redis.ResponseError):
                conn.read_response(disconnect_on_error=False)
        conn._lean_unread = ()

    def close(self) -> None:
        if self._plain is not None:
            self._plain.connection_pool.disconnect()
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
