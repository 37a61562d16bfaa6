"""The Redis broker transport: kombu's, with the reconnect fix (shared/kombu_redis.py) unless
WARDEN_KOMBU_PATCH=0, and kombu's own transport for any other broker."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import redis

from shared.celery_app import make_celery
from shared.kombu_redis import Channel, held_messages


def test_the_patched_channel_carries_messages_and_its_private_hooks_are_as_relied_on(settings: Any) -> None:
    import inspect

    from kombu.transport import redis as kombu_redis

    # The private methods shared/kombu_redis.py overrides: fails when kombu changes them.
    for method in (kombu_redis.Channel._connparams, kombu_redis.Channel._get_pool):
        assert list(inspect.signature(method).parameters) == ["self", "asynchronous"]
    assert list(inspect.signature(kombu_redis.Channel._brpop_read).parameters) == ["self", "options"]
    assert list(inspect.signature(kombu_redis.Channel._q_for_pri).parameters) == ["self", "queue", "pri"]
    assert list(inspect.signature(kombu_redis.QoS.append).parameters) == ["self", "message", "delivery_tag"]
    assert list(inspect.signature(kombu_redis.QoS.restore_by_tag).parameters) == [
        "self", "tag", "client", "leftmost"]
    assert list(inspect.signature(kombu_redis.MultiChannelPoller.get).parameters) == ["self", "callback", "timeout"]
    assert hasattr(kombu_redis.MultiChannelPoller(), "_channels")
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
            queue.consumer.qos(prefetch_count=n_delivered)  # the transport takes no more than that
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


def test_a_brpop_reply_brings_waiting_messages_recorded_as_delivered_within_the_prefetch(settings: Any) -> None:
    """One BRPOP and one script call deliver a batch, in the queue's order; each message is in
    ``unacked`` from the moment it leaves its queue (a worker killed meanwhile loses none: the
    visibility timeout restores it), and no more are taken than the consumer's prefetch allows."""
    name = f"batch-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(settings.redis_url)
    with make_celery(settings, main="batch-test").connection_for_write() as conn:
        queue = conn.SimpleQueue(name)
        try:
            for i in range(10):
                queue.put([[f"exec_{i}"], {}, {}], headers={"task": "workers.executions.run"})
            queue.consumer.qos(prefetch_count=6)
            brpops = _calls(client, "brpop")
            taken = [queue.get(timeout=5)]
            assert _calls(client, "brpop") - brpops == 1
            queued, delivered = held_messages(client, name)
            assert queued == 4
            assert sorted(d.args[0] for d in delivered if d.queue == name) == [f"exec_{i}" for i in range(6)]
            taken += [queue.get(timeout=5) for _ in range(5)]
            assert [m.payload[0][0] for m in taken] == [f"exec_{i}" for i in range(6)]
            assert _calls(client, "brpop") - brpops == 1  # the five came with the first
            for m in taken:
                m.ack()
            rest = [queue.get(timeout=5) for _ in range(4)]
            assert [m.payload[0][0] for m in rest] == [f"exec_{i}" for i in range(6, 10)]
            for m in rest:
                m.ack()
            queued, delivered = held_messages(client, name)
            assert (queued, [d for d in delivered if d.queue == name]) == (0, [])
        finally:
            queue.clear()
            queue.close()


def test_with_batches_off_each_message_is_its_own_brpop(settings: Any) -> None:
    name = f"nobatch-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(settings.redis_url)
    with make_celery(settings.with_overrides(broker_take_batch=0), main="nobatch-test").connection_for_write() as conn:
        queue = conn.SimpleQueue(name)
        try:
            for i in range(3):
                queue.put({"n": i})
            brpops = _calls(client, "brpop")
            got = [queue.get(timeout=5) for _ in range(3)]
            assert [m.payload["n"] for m in got] == [0, 1, 2]
            assert _calls(client, "brpop") - brpops == 3
            for m in got:
                m.ack()
        finally:
            queue.clear()
            queue.close()


def test_messages_taken_but_not_handed_over_go_back_to_the_head_of_their_queue(settings: Any) -> None:
    """The consumer's callback raises on the second message of a batch: the third to fifth, taken
    with the first two, go back ahead of the rest in their order (none left in ``unacked``, none
    lost), and the next consumer gets them first."""
    from kombu import Consumer, Queue

    name = f"giveback-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(settings.redis_url)
    handed: list[Any] = []

    def failing(body: Any, message: Any) -> None:
        handed.append(message)
        if body["n"] == 1:
            raise RuntimeError("the consumer fails on its second message")

    with make_celery(settings, main="giveback-test").connection_for_write() as conn:
        q = Queue(name, routing_key=name)
        try:
            producer = conn.Producer()
            for i in range(7):
                producer.publish({"n": i}, routing_key=name, declare=[q])
            with Consumer(conn, [q], callbacks=[failing], prefetch_count=5), \
                    pytest.raises(RuntimeError, match="second message"):
                conn.drain_events(timeout=5)
            assert [m.payload["n"] for m in handed] == [0, 1]
            assert client.hlen("unacked") >= 2 and all(
                client.hexists("unacked", m.delivery_tag) for m in handed)
            assert held_messages(client, name)[0] == 5  # 2, 3, 4 back, 5 and 6 never taken
            later: list[Any] = []
            with Consumer(conn, [q], callbacks=[lambda body, message: later.append(message)], prefetch_count=10):
                while len(later) < 5:
                    conn.drain_events(timeout=5)
            assert [m.payload["n"] for m in later] == [2, 3, 4, 5, 6]
            for m in handed + later:
                m.ack()
            assert not any(client.hexists("unacked", m.delivery_tag) for m in handed + later)
        finally:
            q.bind(conn.default_channel).delete()


def test_a_message_the_script_cannot_read_goes_back_where_it_was(settings: Any) -> None:
    """TAKE_MORE, run against Redis directly: an envelope without a delivery tag stops the batch and
    stays next out of its queue; what was taken before it is recorded as delivered."""
    from shared.kombu_redis import TAKE_MORE

    name = f"script-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(settings.redis_url)
    idx, unacked = f"{name}-index", f"{name}-unacked"

    def envelope(tag: str) -> str:
        return json.dumps({"body": "e30=", "properties": {"delivery_tag": tag, "delivery_info": {
            "exchange": name, "routing_key": name}}})

    try:
        # Next out first: RPOP takes from the right.
        client.lpush(name, envelope("t-2"), "not json", envelope("t-4"))
        reply = client.eval(TAKE_MORE, 3, idx, unacked, name, 1700000000.5, 10, "t-1", '["first"]')
        assert [json.loads(item)["properties"]["delivery_tag"] for item in reply[1::2]] == ["t-2"]
        assert set(client.hkeys(unacked)) == {b"t-1", b"t-2"}
        assert json.loads(client.hget(unacked, "t-2")) == [json.loads(envelope("t-2")), name, name]
        assert client.zscore(idx, "t-2") == 1700000000.5
        assert client.lrange(name, 0, -1) == [envelope("t-4").encode(), b"not json"]
    finally:
        client.delete(name, idx, unacked)


def _calls(client: Any, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
