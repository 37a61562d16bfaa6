"""The Redis broker transport: one client object per channel (not one per command), a fresh one
after the channel's pool is replaced, and kombu's own transport for any other broker."""

from __future__ import annotations

from typing import Any

from shared.celery_app import make_celery
from shared.kombu_redis import Channel


def test_one_client_per_channel_and_messages_still_flow(settings: Any) -> None:
    app = make_celery(settings, main="transport-test")
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first  # shared, not rebuilt per command
        channel._pool = None  # what kombu does after a connection error: a new pool…
        assert channel._create_client() is not first  # …gets a new client
        queue = conn.SimpleQueue("transport-test")
        try:
            queue.put({"n": 1})
            assert queue.get(timeout=5).payload == {"n": 1}
        finally:
            queue.clear()
            queue.close()


def test_other_brokers_keep_kombus_transport(settings: Any) -> None:
    app = make_celery(settings.with_overrides(celery_broker_url="amqp://guest@127.0.0.1:5672//"), main="amqp-test")
    assert app.conf.broker_transport is None
