"""PostgreSQL access: one psycopg2 connection pool per process.

The pool is created lazily and re-created after a fork (gunicorn and Celery prefork both fork
after import), so no connection is ever shared between processes.

PostgreSQL going away. An idle pooled connection whose server restarted (or was shut down) is
found out at checkout without a round trip: its socket is readable (the server's goodbye or EOF)
while nothing was asked, so it is closed and another taken, and after a restart every idle
connection of the old server is replaced the first time it is checked out, not at the cost of one
failed request each. A connection that fails in use is closed, not pooled again. While the
server is down, checkouts fail fast with :class:`shared.errors.ServiceUnavailable`
(``database_unavailable``, ``retry_after``: the API answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import select
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg2
import psycopg2.extras
import psycopg2.pool

from shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)


def dumps_json(obj: Any) -> str:
    """orjson where it can (several times faster on the executor's state and events), the standard
    library for what it refuses (lone surrogates from user text, integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj)


_LONG_NUMBER = re.compile(rb"\d{19,}")


def loads_json(raw: str | bytes) -> Any:
    """orjson where it is exact: it reads an integer beyond 64 bits as a float, so text with a run
    of 19 or more digits (any integer that might not fit) goes to the standard library, as does
    anything orjson refuses (escaped lone surrogates)."""
    try:
        data = raw.encode() if isinstance(raw, str) else raw
    except UnicodeEncodeError:  # an unescaped lone surrogate: not UTF-8, so not for orjson
        return json.loads(raw)
    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


psycopg2.extras.register_default_jsonb(globally=True, loads=loads_json)


class Json(psycopg2.extras.Json):  # type: ignore[misc]
    """psycopg2's Json adapter with :func:`dumps_json`."""

    def dumps(self, obj: Any) -> str:
        return dumps_json(obj)


#: Seconds a client should wait before retrying when the database is unavailable.
RETRY_AFTER_S = 2


# A process that dies (a host lost, SIGKILL) mid-transaction leaves its session "idle in
# transaction" holding its row locks until TCP keepalive gives up, hours later: a retry of the
# same Idempotency-Key on another API host would wait on that row all that time. Our transactions
# never sit idle for more than a statement's round trip, so PostgreSQL ends such a session after a
# minute.
IDLE_IN_TRANSACTION = "-c idle_in_transaction_session_timeout=60000"


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL cannot serve now (down, restarting, pool exhausted): worth retrying shortly."""

    code = "database_unavailable"


#: What "the database cannot serve now" looks like to a caller (connection refused or lost, a dead
#: pooled connection, the pool unable to connect or exhausted): worth trying again shortly.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (psycopg2.OperationalError, psycopg2.InterfaceError,
                                                  DatabaseUnavailable)


def first_line(exc: BaseException | str) -> str:
    """An error in one line for a log: its message's first line, or its type when it has none
    (psycopg2's messages run over several lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else (exc if isinstance(exc, str) else type(exc).__name__)


def unavailable(exc: BaseException | str) -> DatabaseUnavailable:
    """The error for a database that cannot serve now (the cause is logged, not shown to clients)."""
    log.warning("database unavailable: %s", first_line(exc))
    return DatabaseUnavailable("Database unavailable, retry shortly", retry_after=RETRY_AFTER_S)


def _dead(conn: Any) -> bool:
    """True when an idle connection cannot be used: closed, or its socket readable although no
    query is outstanding. Nothing is due on an idle connection (no LISTEN here): what arrived is
    the server's goodbye (an administrator shutdown's FATAL, then EOF), or a rare asynchronous
    notice, for which one reconnect is a fair price."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


_NAMED = re.compile(r"%\((\w+)\)s(::[\w\[\]]+)?")


class Prepared:
    """A statement PREPAREd once per connection and EXECUTEd from then on: PostgreSQL parses and
    plans it once per session instead of on every call (for the executor's step statement, a CTE
    over five tables, planning was about half of its server time).

    psycopg2 has no server-side prepared statements, hence by hand: the ``%(name)s`` SQL is turned
    into ``$n`` form once; each call sends ``EXECUTE name (…)`` with the values interpolated by
    psycopg2 as usual. Each connection remembers what was prepared on it in a weak map, so a
    closed connection takes its entries along; a prepared statement outlives rolled-back
    transactions (PREPARE is not transactional). The result columns must be listed explicitly (no
    ``*``): a migration that adds a column would otherwise change a cached plan's result type.
    Not for transaction-mode connection poolers (PgBouncer), which do not keep sessions.

    ``generic_plan=True`` runs the statement with ``plan_cache_mode = force_generic_plan`` (``SET
    LOCAL`` in the same query string: the implicit transaction of a multi-statement query, or the
    caller's). PostgreSQL otherwise chooses per statement between its generic plan and a custom
    plan made for each call's values, and for the run claim (a recursive CTE over four tables) it
    kept choosing custom ones: planning on every call, more server time than executing
    (``bench_inflight``). For statements keyed by ids, whose best plan does not depend on the values.
    """

    _on: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    def __init__(self, sql: str, *, generic_plan: bool = False) -> None:
        names: list[str] = []
        casts: dict[str, str] = {}

        def number(m: re.Match[str]) -> str:
            if m.group(1) not in names:
                names.append(m.group(1))
            if m.group(2):
                casts.setdefault(m.group(1), m.group(2))
            return f"${names.index(m.group(1)) + 1}{m.group(2) or ''}"

        body = _NAMED.sub(number, sql).replace("%%", "%")
        self.name = "warden_" + hashlib.sha1(body.encode()).hexdigest()[:16]  # noqa: S324 - a name, not a secret
        self._prepare = f"PREPARE {self.name} AS {body}"
        # A value cast in the statement is cast in EXECUTE too: psycopg2 sends a list as ARRAY[…],
        # typed text[], which would not be coerced to, say, a jsonb[] parameter.
        args = ", ".join(f"%({n})s{casts.get(n, '')}" for n in names)
        self._execute = ("SET LOCAL plan_cache_mode = force_generic_plan; " if generic_plan else "") + \
            f"EXECUTE {self.name}" + (f" ({args})" if names else "")

    def execute(self, cur: Any, params: dict[str, Any] | None = None) -> None:
        conn = cur.connection
        done = self._on.get(conn)
        if done is None:
            done = self._on[conn] = set()
        if self.name not in done:
            cur.execute(self._prepare)
            done.add(self.name)
        cur.execute(self._execute, params)


class Database:
    def __init__(self, url: str, *, minconn: int = 1, maxconn: int = 20, application_name: str = "warden") -> None:
        self.url = url
        self.application_name = application_name
        self.minconn = minconn
        self.maxconn = maxconn
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # psycopg2's pool raises at once when empty; callers queue here instead (cooperative under
        # gevent, whose monkey-patching turns this into a greenlet-aware semaphore).
        self._slots = threading.BoundedSemaphore(maxconn)
        self.acquire_timeout_s = 10.0

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        pid = os.getpid()
        if self._pool is None or self._pid != pid:
            with self._lock:
                if self._pool is None or self._pid != pid:
                    try:
                        self._pool = psycopg2.pool.ThreadedConnectionPool(
                            self.minconn, self.maxconn, self.url, connect_timeout=5,
                            application_name=self.application_name, options=IDLE_IN_TRANSACTION)
                    except psycopg2.OperationalError as exc:
                        raise unavailable(exc) from None
                    # psycopg2's pool closes every returned connection beyond `minconn`, so under
                    # concurrency each checkout reconnected (~2 ms). `minconn` is only read on
                    # return after construction: raising it keeps up to maxconn idle connections,
                    # opened lazily as before.
                    self._pool.minconn = self.maxconn
                    self._pid = pid
                    self._slots = threading.BoundedSemaphore(self.maxconn)
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection; the caller manages transactions."""
        pool = self._get_pool()
        slots = self._slots
        if not slots.acquire(timeout=self.acquire_timeout_s):
            raise DatabaseUnavailable("Database pool exhausted, retry shortly", retry_after=RETRY_AFTER_S)
        try:
            conn = self._checkout(pool)
        except psycopg2.Error as exc:
            slots.release()
            raise unavailable(exc) from None
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            if not broken and not conn.closed:
                try:
                    if conn.status != psycopg2.extensions.STATUS_READY:
                        conn.rollback()
                except psycopg2.Error:
                    broken = True
            pool.putconn(conn, close=broken or bool(conn.closed))
            slots.release()

    def _checkout(self, pool: psycopg2.pool.ThreadedConnectionPool) -> Any:
        """An idle connection that is still alive, or a new one (the pool opens it)."""
        for _ in range(self.maxconn + 1):
            conn = pool.getconn()
            if not _dead(conn):
                return conn
            pool.putconn(conn, close=True)
        return pool.getconn()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor (rows as dicts) inside one transaction: commit on success, rollback on error."""
        with self.connection() as conn:
            try:
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    @contextmanager
    def autocommit(self) -> Iterator[Any]:
        """A cursor whose single statement commits by itself: one round trip instead of two.
        Only for work that is one statement (a CTE may write several tables atomically)."""
        with self.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
            finally:
                if not conn.closed:
                    conn.autocommit = False

    # One statement each, so autocommit: a statement is atomic on its own (a string of several runs
    # as one implicit transaction), and it saves the BEGIN and COMMIT round trips.
    def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        with self.autocommit() as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    def fetchall(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        with self.autocommit() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def execute(self, sql: str, params: Any = None) -> int:
        with self.autocommit() as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def ping(self) -> bool:
        try:
            return self.fetchone("SELECT 1 AS ok") is not None
        except (psycopg2.Error, ServiceUnavailable):
            return False

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.closeall()
        self._pool = None
