"""kombu's Redis transport with two changes, the project's only use of kombu internals;
``WARDEN_KOMBU_PATCH=0`` runs kombu's own transport instead (public API only, without them):
a channel can still reach Redis while its connection is being torn down, and its connection pool
waits for a free connection instead of failing.

When the broker connection drops, Celery's consumer closes the old kombu connection; closing a
channel first drops its connection pools, then restores the messages it delivered but nobody
acknowledged, which needs a client again, so a new pool, built from
``channel.connection.client``: the ``kombu.Connection``, which by then may already have let go of
its transport (``Transport.client = None``). kombu then raises
``AttributeError("'NoneType' object has no attribute 'hostname'")``, which Celery does not treat
as a connection error: the worker stopped with "Unrecoverable error" instead of reconnecting.
Here the channel remembers the connection parameters it was built with and uses them once the
connection is gone; with neither, it raises redis-py's ``ConnectionError`` (one of the
transport's connection errors, which Celery handles by reconnecting).

Bounded connections. kombu builds a ``redis.ConnectionPool``, which raises ``MaxConnectionsError``
when all ``max_connections`` are busy (Celery then logs "Couldn't ack" and the message is left
unacknowledged); under the gevent pool hundreds of runs may acknowledge at once. kombu's public
``max_connections`` option could only trade that for a pool as large as the worker's
concurrency; a ``redis.BlockingConnectionPool`` keeps it at ``max_connections`` (10, kombu's
default) and queues the rest, so an executions process holds at most 10 broker connections
however many runs are in flight (tests/workers/test_inflight.py counts them).

Private API relied on: ``kombu.transport.redis.Channel._connparams(asynchronous)`` and
``Channel._get_pool(asynchronous)`` (kombu 5.7; pinned in pyproject.toml).
``tests/shared/test_kombu_redis.py`` fails if their signatures change, and
``tests/workers/test_redis_restart.py`` reproduces the crash without the fix. (Round 1 also kept
one client object per channel here; it did not move ``bench_inflight``, so it went.)
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

POOL_WAIT_S = 30  # how long a command waits for one of the pool's connections before failing


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _saved_connparams: dict[bool, dict[str, Any]] | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and getattr(transport, "client", None) is not None:
            params = super()._connparams(asynchronous=asynchronous)
            if self._saved_connparams is None:
                self._saved_connparams = {}
            self._saved_connparams[asynchronous] = dict(params)
            return params
        saved = (self._saved_connparams or {}).get(asynchronous)
        if saved is None:
            raise redis.exceptions.ConnectionError("broker connection closed")
        return dict(saved)

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own BRPOP connection
            return super()._get_pool(asynchronous=True)
        params = self._connparams(asynchronous=False)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return redis.BlockingConnectionPool(timeout=POOL_WAIT_S, **params)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
