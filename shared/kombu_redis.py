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
``Channel._get_pool(asynchronous)`` (kombu 5.7; pinned in pyproject.toml); and, read only, the
transport's storage in Redis (:func:`held_messages`: the lost-message sweep and the chaos report),
for which kombu has no public API: a queue's messages in lists named after it (one per priority
step other than 0, "<queue>\x06\x16<step>"), delivered ones in the hash ``unacked`` (tag →
[message, exchange, routing key]) until acknowledged, their delivery times in the sorted set
``unacked_index``. ``tests/workers/test_lost_message.py`` reads it behind a real kombu consumer,
so a kombu that stores them otherwise fails it; without it the sweep has nothing to count and the
``WARDEN_REQUEUE_QUEUED_S`` sweep (public API only) remains the backstop.
``tests/shared/test_kombu_redis.py`` fails if their signatures change, and
``tests/workers/test_redis_restart.py`` reproduces the crash without the fix. (Round 1 also kept
one client object per channel here; it did not move ``bench_inflight``, so it went.)
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, cast

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


PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)  # kombu's default steps other than 0


@dataclass(frozen=True)
class Delivered:
    """A message delivered and not yet acknowledged: its queue, task, positional arguments and
    seconds since its delivery."""

    queue: str
    task: str | None
    args: list[Any]
    age_s: float


#: Entries of ``unacked`` read per HSCAN call: with thousands of runs in flight on a fleet the
#: hash holds megabytes, and one HGETALL would stop Redis while it is serialised and the sweep while
#: it is parsed; batches bound both.
SCAN_COUNT = 500


def held_messages(client: redis.Redis, queue: str) -> tuple[int, list[Delivered]]:
    """(messages waiting in ``queue``, every message delivered and not acknowledged, of any queue),
    read from kombu's storage (see the module docstring): the queue lengths and the clock in one
    round trip, then ``unacked`` in HSCAN batches of about ``SCAN_COUNT``, each with its delivery
    times. Not one snapshot: a message delivered or acknowledged meanwhile may be counted in both
    places or in neither; the sweep that reads this acts only on runs queued for a long while, and a
    run message sent twice starts its run once."""
    pipe = client.pipeline(transaction=False)
    for key in (queue, *(f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS)):
        pipe.llen(key)
    pipe.time()
    *lengths, now = pipe.execute()
    clock = now[0] + now[1] / 1e6
    out = []
    cursor = 0
    while True:
        cursor, reply = client.hscan("unacked", cursor, count=SCAN_COUNT)
        batch = cast(dict[bytes, bytes], reply)
        if batch:
            tags = list(batch)
            pipe = client.pipeline(transaction=False)
            for tag in tags:
                pipe.zscore("unacked_index", tag)
            for tag, delivered_at in zip(tags, pipe.execute(), strict=True):
                parsed = _parse_delivered(batch[tag])
                if parsed is not None:
                    routing_key, task, args = parsed
                    age = clock - delivered_at if delivered_at is not None else 0.0
                    out.append(Delivered(routing_key, task, args, max(0.0, age)))
        if not cursor:
            return int(sum(lengths)), out


def _parse_delivered(raw: bytes) -> tuple[str, str | None, list[Any]] | None:
    """(routing key, task name, args) of an ``unacked`` entry: kombu's envelope around Celery's
    protocol 2 body ([args, kwargs, embed])."""
    try:
        message, _exchange, routing_key = json.loads(raw)
        body = message.get("body")
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0] if body else []
        return str(routing_key), message.get("headers", {}).get("task"), list(args)
    except (ValueError, KeyError, IndexError, TypeError):
        return None
