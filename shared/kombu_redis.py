"""kombu's Redis transport, with one client object per channel instead of one per command.

kombu's Redis ``Channel`` builds a new ``redis.Redis`` object for every publish and for each
acknowledgement's bookkeeping (``conn_or_acquire`` → ``_create_client``), and under redis-py 8
building one costs ~140 µs of CPU (its response-callback table is rebuilt each time): more than
the LPUSH it is built for. A ``redis.Redis`` is safe to share (it draws connections from the
channel's pool per command), so this channel keeps one per pool.

Its pool waits for a free connection instead of failing: kombu builds a ``redis.ConnectionPool``,
which raises ``MaxConnectionsError`` when all ``max_connections`` (10) are busy. Under the gevent
pool hundreds of runs may finish, and acknowledge their messages, at once; a blocking pool keeps
the connections bounded and queues the rest. Everything else is kombu's.

Used through Celery's ``broker_transport`` setting when the broker is a ``redis://`` URL
(``shared/celery_app.py``); an ``amqp://`` broker is untouched.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

POOL_WAIT_S = 30  # how long a command waits for one of the pool's connections before failing


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own BRPOP connection
            return super()._get_pool(asynchronous=True)
        params = self._connparams(asynchronous=False)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return redis.BlockingConnectionPool(timeout=POOL_WAIT_S, **params)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's BRPOP client: kombu keeps that one itself
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:  # (a new pool after a reconnect)
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
