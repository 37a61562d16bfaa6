"""The Redis broker transport: kombu's, with the reconnect fix (shared/kombu_redis.py) unless
WARDEN_KOMBU_PATCH=0, and kombu's own transport for any other broker."""

from __future__ import annotations

from typing import Any

from shared.celery_app import make_celery
from shared.kombu_redis import Channel


def test_the_patched_channel_carries_messages_and_its_private_hooks_are_as_relied_on(settings: Any) -> None:
    import inspect

    from kombu.transport import redis as kombu_redis

    # The private methods shared/kombu_redis.py overrides: fails when kombu changes them.
    for method in (kombu_redis.Channel._connparams, kombu_redis.Channel._get_pool):
        assert list(inspect.signature(method).parameters) == ["self", "asynchronous"]
    app = make_celery(settings, main="transport-test")
    with app.connection_for_write() as conn:
        assert isinstance(conn.default_channel, Channel)
        queue = conn.SimpleQueue("transport-test")
        try:
            queue.put({"n": 1})
            assert queue.get(timeout=5).payload == {"n": 1}
        finally:
            queue.clear()
            queue.close()


def test_without_the_patch_kombus_own_transport_is_used(settings: Any) -> None:
    app = make_celery(settings.with_overrides(kombu_patch=False), main="unpatched-test")
    assert app.conf.broker_transport is None
    assert app.conf.broker_transport_options["max_connections"] >= 1000


def test_other_brokers_keep_kombus_transport(settings: Any) -> None:
    app = make_celery(settings.with_overrides(celery_broker_url="amqp://guest@127.0.0.1:5672//"), main="amqp-test")
    assert app.conf.broker_transport is None
