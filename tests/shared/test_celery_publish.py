"""The relay's lean publisher writes the message Celery's send_task writes, in one pipelined
write, and falls back to send_task where it would differ."""

from __future__ import annotations

import json
import time
from typing import Any

import redis as redis_lib
from celery import signals

from shared.celery_publish import Publisher
from shared.outbox import PUBLISH_RETRY_POLICY


def _pushed(settings: Any, queue: str) -> list[dict[str, Any]]:
    client = redis_lib.Redis.from_url(settings.broker_url)
    raw = client.lrange(queue, 0, -1)
    client.delete(queue)
    return [json.loads(m) for m in reversed(raw)]  # LPUSH: oldest last


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    props = dict(message["properties"])
    assert props.pop("delivery_tag")  # a fresh uuid each time, as kombu's
    return {**message, "properties": props}


def test_lean_messages_equal_send_tasks(celery_app: Any, settings: Any) -> None:
    queue = f"probe-{time.monotonic_ns()}"
    celery_app.send_task("workers.executions.run", args=["exec_probe"], queue=queue, task_id="outbox-7",
                         retry=True, retry_policy=PUBLISH_RETRY_POLICY, ignore_result=True)
    (reference,) = _pushed(settings, queue)

    publisher = Publisher(celery_app, PUBLISH_RETRY_POLICY)
    assert publisher._lean is not None
    publisher._declared.add(queue)
    rows = [(7, "workers.executions.run", ["exec_probe"], queue), (8, "workers.delivery.execution_webhook",
                                                                   ["dlv_x"], queue)]
    assert publisher.publish(rows) == ([7, 8], None)
    lean, second = _pushed(settings, queue)
    assert _comparable(lean) == _comparable(reference)
    assert second["headers"]["id"] == "outbox-8" and second["headers"]["argsrepr"] == "['dlv_x']"
    assert lean["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_first_message_per_queue_goes_through_send_task_then_lean(celery_app: Any, settings: Any) -> None:
    queue = f"probe-{time.monotonic_ns()}"
    publisher = Publisher(celery_app, PUBLISH_RETRY_POLICY)
    sent: list[str] = []
    real = celery_app.send_task

    def spy(name: str, **kw: Any) -> Any:
        sent.append(kw["task_id"])
        return real(name, **kw)

    celery_app.send_task = spy
    try:
        assert publisher.publish([(1, "t.a", [1], queue), (2, "t.a", [2], queue)]) == ([1, 2], None)
        assert publisher.publish([(3, "t.a", [3], queue)]) == ([3], None)
    finally:
        del celery_app.send_task
    assert sent == ["outbox-1", "outbox-2"]  # up to the queue's first row; after that, lean
    assert [m["headers"]["id"] for m in _pushed(settings, queue)] == ["outbox-1", "outbox-2", "outbox-3"]


def test_publish_signal_receivers_get_send_task(celery_app: Any, settings: Any) -> None:
    queue = f"probe-{time.monotonic_ns()}"
    publisher = Publisher(celery_app, PUBLISH_RETRY_POLICY)
    publisher._declared.add(queue)
    seen: list[Any] = []

    def receiver(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen.append(headers["id"])
        headers["traceparent"] = "00-abc-def-01"

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        assert publisher.publish([(5, "t.b", [], queue)]) == ([5], None)
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == ["outbox-5"]
    assert _pushed(settings, queue)[0]["headers"]["traceparent"] == "00-abc-def-01"


def test_unreachable_broker_is_a_refusal_with_nothing_published(celery_app: Any) -> None:
    from shared.redis_client import LeanRedis
    from warden.services import free_port

    publisher = Publisher(celery_app, PUBLISH_RETRY_POLICY)
    publisher._declared.add("executions")
    publisher._lean = LeanRedis(f"redis://127.0.0.1:{free_port()}/0")
    done, error = publisher.publish([(9, "workers.executions.run", ["exec_none"], "executions")])
    assert done == [] and error is not None and "ConnectionError" in error
