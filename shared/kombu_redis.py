"""kombu's Redis transport, with one client object per channel instead of one per command.

kombu's Redis ``Channel`` builds a new ``redis.Redis`` object for every publish and for each
acknowledgement's bookkeeping (``conn_or_acquire`` → ``_create_client``), and under redis-py 8
building one costs ~140 µs of CPU (its response-callback table is rebuilt each time): more than
the LPUSH it is built for. A ``redis.Redis`` is safe to share (it draws connections from the
channel's pool per command), so this channel keeps one per pool. Everything else is kombu's.

Used through Celery's ``broker_transport`` setting when the broker is a ``redis://`` URL
(``shared/celery_app.py``); an ``amqp://`` broker is untouched.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None

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
