"""Task messages for a Redis broker, published in one pipelined write per batch.

Every agent run is announced by one task message, from the relay or the API's dispatcher, and
Celery's ``send_task`` costs about 250 µs of CPU per message on this path: the router, a
producer from the pool, the queue declaration check (which copies the Queue each time), kombu's
retry wrapper, an ``AsyncResult`` nobody reads, then one LPUSH round trip. The message itself is
a small fraction of that. So:

- Celery still writes each message: ``app.amqp.create_task_message`` gives the protocol-2
  headers and body exactly as ``send_task`` would (task id, argsrepr, origin, ignore_result, …).
- Only kombu's envelope is written here: the JSON document kombu's Redis channel LPUSHes for a
  direct queue (anonymous exchange, routing key = queue name, priority 0, body base64-encoded).
  ``tests/shared/test_celery_publish.py`` checks it against what ``send_task`` pushes.
- All of a batch's LPUSHes go in one write (``LeanRedis``), about 30 µs per message in all.

``send_task`` is still used where this would differ from it: a broker other than ``redis://``
with the project's transport, a key prefix or priority steps in the transport options, Celery's
task-sent events, receivers on ``before_task_publish``/``after_task_publish`` (tracing
integrations add headers there), a task registered here with publishing options beyond its
time limits and expiry, and the first message to each queue from this process (it declares the
queue, as send_task does).

Private API relied on (celery 5.7, pinned in pyproject.toml): ``Celery._tasks`` (the task
registry, read without finalizing the app, as ``send_task`` does) and ``Task._get_exec_options``
(the options ``send_task`` would add); kombu's Redis envelope as above (kombu 5.7). Fallback:
``WARDEN_KOMBU_PATCH=0`` (kombu's own transport) sends every message through ``send_task``, public
API only; ``WARDEN_LEAN_REDIS=0`` keeps the envelope here but writes it through redis-py's client.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import signals
from kombu.utils.json import dumps as kombu_dumps

from shared.redis_client import LeanRedis, pack

Row = tuple[int, str, Any, str]  # (outbox id, task name, args, queue)


class Publisher:
    """Publishes outbox rows as task messages with id ``outbox-<id>`` (one per app and process)."""

    def __init__(self, app: Any, retry_policy: dict[str, Any]) -> None:
        self.app = app
        self.retry_policy = retry_policy
        self._declared: set[str] = set()
        self._task_options: dict[str, dict[str, Any] | None] = {}
        self._lean = LeanRedis(app.conf.broker_url) if self._lean_possible(app) else None

    @staticmethod
    def _lean_possible(app: Any) -> bool:
        conf = app.conf
        options = conf.broker_transport_options or {}
        return (urlsplit(str(conf.broker_url)).scheme == "redis"
                and str(conf.broker_transport or "").startswith("shared.kombu_redis")
                and not conf.task_send_sent_event and int(conf.task_protocol or 2) == 2
                and not any(options.get(k) for k in ("global_keyprefix", "priority_steps", "sep")))

    def _lean_now(self) -> bool:
        return (self._lean is not None and not signals.before_task_publish.receivers
                and not signals.after_task_publish.receivers)

    def publish(self, rows: list[Row]) -> tuple[list[int], str | None]:
        """Publish in order until the broker refuses: (the outbox ids published, the refusal or
        None). Rows after a refusal are not sent."""
        if not self._lean_now() or any(self._options(r[1]) is None for r in rows):
            return self._send_each(rows)
        done: list[int] = []
        first = [r for r in rows if r[3] not in self._declared]
        if first:  # in order: up to and including each queue's first row through send_task
            cut = rows.index(first[-1]) + 1
            done, error = self._send_each(rows[:cut])
            if error is not None:
                return done, error
            self._declared.update(r[3] for r in rows[:cut])
            rows = rows[cut:]
        if not rows:
            return done, None
        assert self._lean is not None
        try:
            replies = self._lean.call_many([self._lpush(*row) for row in rows])
        except (redis.RedisError, OSError) as exc:
            # Unknown whether any went through: all stay pending and are published again
            # (at least once; the tasks are idempotent, as for any relay restart).
            return done, f"{type(exc).__name__}: {exc}"[:500]
        for row, reply in zip(rows, replies, strict=True):
            if isinstance(reply, Exception):
                return done, f"{type(reply).__name__}: {reply}"[:500]
            done.append(row[0])
        return done, None

    def _options(self, task_name: str) -> dict[str, Any] | None:
        """What send_task takes from a task registered in this process (its time limits and
        expiry go into the headers); None when one of its options would change the envelope."""
        if task_name not in self._task_options:
            task = self.app._tasks.get(task_name)  # the registry itself: no finalize, as send_task
            found = {k: v for k, v in (task._get_exec_options() if task is not None else {}).items()
                     if v is not None and k != "queue" and not (k == "serializer" and v == "json")}
            lean = {k: found.pop(k) for k in ("time_limit", "soft_time_limit", "expires") if k in found}
            self._task_options[task_name] = None if found else lean
        return self._task_options[task_name]

    def _lpush(self, outbox_id: int, task_name: str, args: Any, queue: str) -> bytes:
        task_id = f"outbox-{outbox_id}"
        headers, properties, body, _ = self.app.amqp.create_task_message(
            task_id, task_name, args, {}, reply_to=self.app.thread_oid, ignore_result=True,
            **(self._options(task_name) or {}))
        properties.update(delivery_mode=2, delivery_info={"exchange": "", "routing_key": queue}, priority=0,
                          body_encoding="base64", delivery_tag=str(uuid.uuid4()))
        envelope = {"body": base64.b64encode(kombu_dumps(body).encode()).decode(), "content-encoding": "utf-8",
                    "content-type": "application/json", "headers": headers, "properties": properties}
        return pack(b"LPUSH", queue.encode(), kombu_dumps(envelope).encode())

    def _send_each(self, rows: list[Row]) -> tuple[list[int], str | None]:
        done: list[int] = []
        for outbox_id, task_name, args, queue in rows:
            try:
                self.app.send_task(task_name, args=args, queue=queue, task_id=f"outbox-{outbox_id}", retry=True,
                                   retry_policy=self.retry_policy,
                                   ignore_result=True)  # nobody waits on it: no result-channel subscription
            except Exception as exc:  # kombu raises many types for an unreachable broker
                return done, f"{type(exc).__name__}: {exc}"[:500]
            done.append(outbox_id)
        return done, None
