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


def test_held_messages_reads_every_delivered_message_in_batches(settings: Any) -> None:
    """The lost-message sweep's view of the broker (shared.kombu_redis.held_messages), behind a
    real kombu consumer: more delivered messages than one HSCAN batch, each with its run, queue
    and age, and the ones still queued counted."""
    import secrets

    import redis

    from shared.kombu_redis import SCAN_COUNT, held_messages

    name = f"held-{secrets.token_hex(4)}"
    n_delivered, n_queued = SCAN_COUNT * 2 + 37, 5
    app = make_celery(settings, main="held-test")
    client = redis.Redis.from_url(settings.redis_url)
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue(name)
        try:
            for i in range(n_delivered + n_queued):
                queue.put([[f"exec_{i}"], {}, {}], headers={"task": "workers.executions.run"})
            taken = [queue.get(timeout=5) for _ in range(n_delivered)]  # delivered, not acknowledged
            scans = _calls(client, "hscan")
            queued, delivered = held_messages(client, name)
            assert _calls(client, "hscan") - scans >= 3  # in batches, not one HGETALL
            ours = [d for d in delivered if d.queue == name]
            assert queued == n_queued
            assert sorted(d.args[0] for d in ours) == sorted(f"exec_{i}" for i in range(n_delivered))
            assert {d.task for d in ours} == {"workers.executions.run"}
            assert all(0 <= d.age_s < 60 for d in ours)
            for m in taken:
                m.ack()
            assert [d for d in held_messages(client, name)[1] if d.queue == name] == []
        finally:
            queue.clear()
            queue.close()


def _calls(client: Any, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
