"""kombu's Redis transport with four changes, the project's only use of kombu internals;
``WARDEN_KOMBU_PATCH=0`` runs kombu's own transport instead (public API only, without them):
a channel can still reach Redis while its connection is being torn down, its connection pool
waits for a free connection instead of failing, one BRPOP reply brings the messages waiting
behind it, and a consumer whose prefetch is full notices a freed slot within 50 ms
(:class:`MultiChannelPoller`).

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

Messages taken in batches. kombu's consumer takes one message per round trip of its event loop
(BRPOP), then records it as delivered in a second (``QoS.append``: MULTI, ZADD ``unacked_index``,
HSET ``unacked``), so a worker starting a burst of runs spends two Redis round trips and two passes
of its loop on each message: a fifth of an executions worker's CPU while 1,000 runs start
(``bench_inflight``). Here the second round trip is a script (:data:`TAKE_MORE`) that records the
BRPOP'd message and also takes up to ``take_batch`` more waiting messages (``WARDEN_BROKER_TAKE_BATCH``,
32; never beyond the consumer's prefetch limit, read through kombu's public
``QoS.can_consume_max_estimate``), each recorded as delivered in the same script, so it is never
out of Redis (kombu's own BRPOP-then-record leaves a window where a popped message is nowhere);
they are handed to the consumer, in queue order, before the loop goes on. A message whose delivery
to the consumer was not reached (the consumer raised on an earlier one) goes back to the head of
its queue. An idle queue costs what it did: one BRPOP and one round trip per message.

Private API relied on: ``kombu.transport.redis.Channel._connparams(asynchronous)``,
``Channel._get_pool(asynchronous)``, ``Channel._brpop_read(**options)`` (wrapped: it delivers
through ``Transport._deliver`` to ``basic_consume``'s callback, which calls ``QoS.append``),
``Channel._queue_cycle.items`` and ``Channel._q_for_pri(queue, pri)`` (BRPOP's keys),
``QoS.restore_by_tag(tag)``, ``Message._raw`` (the ``unacked`` entry, as kombu's ``QoS.append``
writes it), ``MultiChannelPoller.get(callback, timeout)`` and its ``_channels``,
and ``Transport.cycle`` (kombu 5.7; pinned in pyproject.toml); and, read only, the
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
import collections
import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

POOL_WAIT_S = 30  # how long a command waits for one of the pool's connections before failing


#: A message BRPOP popped is recorded as unacknowledged, as kombu's ``QoS.append`` records it
#: (ARGV[3] its tag, ARGV[4] its ``unacked`` entry, ARGV[1] the time), and in the same round trip
#: up to ARGV[2] more waiting messages are taken off the consumed queues (KEYS[3..], in BRPOP's
#: order) and recorded alike before the script returns: a message is always in Redis, in its queue
#: or in ``unacked``. A message whose envelope cannot be read goes back where it was and ends the
#: batch (the next BRPOP hands it to kombu, which deals with it as it always has).
TAKE_MORE = """
local now = ARGV[1]
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
local out = {}
local want = tonumber(ARGV[2])
local k = 3
while #out < 2 * want and k <= #KEYS do
  local item = redis.call('RPOP', KEYS[k])
  if not item then
    k = k + 1
  else
    local ok, m = pcall(cjson.decode, item)
    local props = ok and type(m) == 'table' and m['properties'] or nil
    local tag = type(props) == 'table' and props['delivery_tag'] or nil
    if type(tag) ~= 'string' then
      redis.call('RPUSH', KEYS[k], item)
      break
    end
    local info = props['delivery_info']
    if type(info) ~= 'table' then info = {} end
    redis.call('ZADD', KEYS[1], now, tag)
    redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ','
      .. cjson.encode(info['routing_key'] or '') .. ']')
    out[#out + 1] = KEYS[k]
    out[#out + 1] = item
  end
end
return out
"""

#: Most messages one BRPOP reply brings with it (``take_batch`` transport option,
#: ``WARDEN_BROKER_TAKE_BATCH``), bounded further by the consumer's prefetch limit.
TAKE_BATCH = 32


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    def append(self, message: Any, delivery_tag: str) -> None:
        channel = self.channel
        if delivery_tag in channel._taken:  # recorded by TAKE_MORE already
            channel._taken.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        keys, channel._take_keys = channel._take_keys, None
        if keys is None:  # not a BRPOP reply (basic_get, an inbound reject), or batches are off
            super().append(message, delivery_tag)
            return
        info = message.delivery_info
        entry = dumps([message._raw, info["exchange"], info["routing_key"]])
        room = self.can_consume_max_estimate()  # None: no prefetch limit
        want = channel.take_batch if room is None else max(0, min(channel.take_batch, room - 1))
        with channel.conn_or_acquire() as client:
            if channel._take_more is None:  # redis-py's Script: EVALSHA, the text only when unknown
                channel._take_more = client.register_script(TAKE_MORE)
            reply = channel._take_more(keys=[self.unacked_index_key, self.unacked_key, *keys],
                                       args=[time.time(), want, delivery_tag, entry], client=client)
        virtual.QoS.append(self, message, delivery_tag)
        for key, item in zip(reply[::2], reply[1::2], strict=True):
            payload = loads(bytes_to_str(item))
            channel._taken.add(payload["properties"]["delivery_tag"])
            channel._prefetched.append((payload, bytes_to_str(key).rsplit(channel.sep, 1)[0]))


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "take_batch")  # type: ignore[assignment]  # one more
    take_batch = TAKE_BATCH
    _saved_connparams: dict[bool, dict[str, Any]] | None = None
    _take_keys: list[str] | None = None
    _take_more: Any = None  # TAKE_MORE as a redis-py Script, registered on first use

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._taken: set[str] = set()  # tags TAKE_MORE recorded, not yet handed to the consumer
        self._prefetched: collections.deque[tuple[dict[str, Any], str]] = collections.deque()
        super().__init__(*args, **kwargs)

    def _brpop_read(self, **options: Any) -> Any:
        if self.take_batch > 0 and not self.global_keyprefix:  # (a prefix would miss all keys but one)
            self._take_keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps
                               for queue in self._queue_cycle.items]
        try:
            delivered = super()._brpop_read(**options)
            while self._prefetched:
                payload, queue = self._prefetched.popleft()
                self.connection._deliver(payload, queue)
            return delivered
        finally:
            self._take_keys = None
            self._give_back_prefetched()

    def _give_back_prefetched(self) -> None:
        """Messages TAKE_MORE took that were not handed to the consumer (its delivery of an earlier
        one raised): back to the head of their queues in their order, next out, as kombu restores
        the unacknowledged messages of a channel that closes."""
        while self._prefetched:
            payload, _queue = self._prefetched.pop()  # the last first: each goes in ahead of the rest
            tag = payload["properties"]["delivery_tag"]
            self._taken.discard(tag)
            self.qos.restore_by_tag(tag)  # (kombu's leftmost=False: RPUSH, next out)

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


#: How long the poll waits while a consumer's prefetch is full (see MultiChannelPoller).
FULL_POLL_S = 0.05


class MultiChannelPoller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
    """While a consumer holds as many messages as its prefetch allows, no BRPOP is outstanding, so
    nothing wakes its poll when a task ends and frees a slot: Celery's gevent loop slept out its
    2 s drain timeout, and a worker whose every slot was busy noticed a free one up to 2 s late (a
    quiet workspace's run waited that long behind a burst). Then the poll waits FULL_POLL_S, and
    the next one sends BRPOP as soon as a slot is free."""

    def get(self, callback: Any, timeout: float | None = None) -> Any:
        if (timeout is None or timeout > FULL_POLL_S) and any(
                channel.active_queues and not channel.qos.can_consume() for channel in self._channels):
            timeout = FULL_POLL_S
        return super().get(callback, timeout=timeout)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = MultiChannelPoller()  # type: ignore[assignment]  # kombu's own is built the same way, one per transport


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
