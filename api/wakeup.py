"""Outbox wake-ups from the API, coalesced per process.

After committing an outbox row a request used to PUBLISH ``warden:outbox`` itself: a second Redis
round trip on every intake request. Instead the request flags this process's :class:`OutboxWaker`
and answers; a background sender PUBLISHes (``shared.outbox.WAKE``) at once when it was idle,
then waits ``interval_s`` before the next PUBLISH, so a burst of N commits costs a couple of
PUBLISHes instead of N, and a lone commit still wakes the relays within well under a
millisecond. The PUBLISH goes out pre-packed on a connection of the sender's own
(:class:`~shared.redis_client.LeanRedis`) without waiting for Redis's reply, which is read with
the next one (45 against redis-py's ``publish`` 90 µs of CPU here). A wake-up is only a hint: the
relays poll every ``sweep_s`` and drain everything pending on each wake-up, so a coalesced or
lost PUBLISH delays a row by at most ``interval_s`` (or the sweep), never loses it.

Under gunicorn's gevent worker ``threading`` is monkey-patched, so the sender is a greenlet and
its Event is cooperative; elsewhere (the Flask test server, a sync worker) it is a daemon thread.
It is started lazily, on the first wake-up in a process (also after a fork).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

from shared import outbox
from shared.redis_client import LeanRedis, RedisHandle

log = logging.getLogger(__name__)

#: After a PUBLISH, later wake-ups wait at most this long and then share one PUBLISH. Only rows
#: written under load come this way (a lightly loaded process publishes its own, api/dispatch.py),
#: and a relay busy draining picks them up on its next pass anyway; at 5 ms the two processes'
#: 400 PUBLISHes a second (each a loopback send that wakes Redis and the relay) were about 5% of
#: their CPU at 1,500 submissions a second.
INTERVAL_S = 0.02


class OutboxWaker:
    def __init__(self, redis: RedisHandle, interval_s: float = INTERVAL_S) -> None:
        # One connection of its own (only the URL is taken from the handle): the sender is one
        # greenlet (or thread) per process; LeanRedis reopens it after a fork.
        self._lean = LeanRedis(redis.url, max_idle=1, timeout_s=2.0)
        self.interval_s = interval_s
        self.published = 0  # PUBLISHes sent by this process (tests, debugging)
        self._pid = 0
        self._event: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Flag that an outbox row was committed. Never blocks, never touches Redis itself."""
        event = self._event
        if event is None or self._pid != os.getpid():
            event = self._start()
        event.set()

    def _start(self) -> threading.Event:
        with self._lock:
            if self._event is None or self._pid != os.getpid():
                # threading.* is looked up now, after gevent's monkey-patching, not at import.
                self._event = threading.Event()
                self._stopping = False
                self._thread = threading.Thread(target=self._run, args=(self._event,), daemon=True,
                                                name="outbox-waker")
                self._thread.start()
                self._pid = os.getpid()
            return self._event

    def _run(self, event: threading.Event) -> None:
        while True:
            event.wait()
            if self._stopping or self._event is not event:
                return
            event.clear()  # wake-ups from here on get the next PUBLISH
            try:
                # Not waiting for the reply: it is read with the next PUBLISH (a broken connection
                # sends the unconfirmed one again, and a repeated wake-up only costs the relay a
                # look). A failure is not the request's: the relays' sweep finds the rows anyway.
                self._lean.call_many([outbox.WAKE], wait=False)
                self.published += 1
            except (redis.RedisError, OSError) as exc:
                log.debug("outbox wake-up not sent: %s", exc)
            except Exception:  # never let the sender die: the next wake-up must still go out
                log.exception("outbox wake-up failed")
            time.sleep(self.interval_s)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sender (tests; a process that exits needs nothing: the thread is a daemon)."""
        with self._lock:
            event, thread = self._event, self._thread
            self._stopping = True
            self._event = None
            self._thread = None
        if event is not None:
            event.set()
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join(timeout)
            if not thread.is_alive():
                self._lean.close()
