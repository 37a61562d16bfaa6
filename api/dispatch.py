"""The API's dispatcher: run messages published by the process that committed them.

Intake commits the execution with its outbox row and, while the process is lightly loaded
(:meth:`Dispatcher.takes`), ``publish_after`` a few seconds ahead so the relay leaves the row
alone; the request answers at once and a background sender publishes right after, then marks the
rows dispatched, one UPDATE per burst. Under load the rows go to the relay as before
(:meth:`Dispatcher.announce`). This takes the relay's hop (wake-up, claim transaction, publish,
mark) off the way from a request to a running execution (see the README's benchmark notes).

Nothing is lost if it fails: a refused publish clears ``publish_after`` on the rows left so the
relay takes them at once, and if the process dies the relay takes them when ``publish_after``
passes. A message published twice (the process died between publishing and marking) runs once:
the run task is idempotent.

Publishing never happens in the request (Celery's publish can hang while the broker is
unreachable): under gunicorn's gevent worker the sender is a greenlet (``threading`` is
monkey-patched), elsewhere a daemon thread, started lazily per process (also after a fork).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

from api.wakeup import OutboxWaker
from shared import outbox
from shared.db import Database
from shared.store.executions import RUN_TASK

log = logging.getLogger(__name__)

#: How long the relay leaves an intake row to its API process (PUBLISH_RETRY_POLICY fails within ~1 s).
GRACE_S = 5.0
#: The dispatcher takes a group of rows only while this process is lightly loaded: a group of at
#: most OWN_GROUP rows counting the requests queued behind it (intake groups concurrent requests,
#: so a big group means many requests in flight), with at most OWN_BACKLOG messages already
#: waiting. Beyond that the rows go to the relay, which publishes in bulk on another core: a busy
#: API spends its CPU on requests, not on publishing.
OWN_GROUP = 4
OWN_BACKLOG = 16


class Dispatcher:
    def __init__(self, db: Database, celery: Any, waker: OutboxWaker) -> None:
        self.db = db
        self.celery = celery
        self.waker = waker
        self.published = 0  # messages this process published (tests, debugging)
        self._pid = 0
        self._pending: deque[tuple[int, str]] = deque()
        self._event: threading.Event | None = None
        self._lock = threading.Lock()

    def takes(self, n: int, *, waiting: int = 0) -> bool:
        """Whether this process should publish ``n`` more run messages itself (else: the relay).
        ``waiting``: requests already queued behind this group (more load on the way)."""
        return n + waiting <= OWN_GROUP and len(self._pending) + n <= OWN_BACKLOG

    def announce(self, rows: list[tuple[int, str]], *, own: bool) -> None:
        """After commit: publish the rows' run messages here (``own``, decided by :meth:`takes`
        before they were written with ``publish_after``) or wake the relay for them."""
        if own:
            self.dispatch(rows)
        else:
            self.waker.wake()

    def dispatch(self, rows: list[tuple[int, str]]) -> None:
        """Queue committed executions' run messages, ``(outbox id, execution id)`` each. Never
        touches the broker; it only yields once, so that the sender's publish goes out before the
        caller's response (under gevent ``time.sleep`` is cooperative: the sender runs up to its
        first network write and control comes back; with threads it is a GIL hand-off)."""
        event = self._event
        if event is None or self._pid != os.getpid():
            event = self._start()
        self._pending.extend(rows)
        event.set()
        time.sleep(0)

    def _start(self) -> threading.Event:
        with self._lock:
            if self._event is None or self._pid != os.getpid():
                # threading.* is looked up now, after gevent's monkey-patching, not at import.
                self._event = threading.Event()
                self._pending = deque()
                threading.Thread(target=self._run, args=(self._event,), daemon=True, name="dispatcher").start()
                self._pid = os.getpid()
            return self._event

    def _run(self, event: threading.Event) -> None:
        while True:
            event.wait()
            event.clear()  # rows queued from here on get the next pass
            batch = []
            while self._pending:
                batch.append(self._pending.popleft())
            if not batch:
                continue
            try:
                self._publish(batch)
            except Exception:  # never let the sender die; the relay covers whatever was left
                log.exception("dispatcher: publishing %d run message(s) failed", len(batch))

    def _publish(self, batch: list[tuple[int, str]]) -> None:
        done, error = outbox.publish_rows(self.celery, [(oid, RUN_TASK, [eid], "executions") for oid, eid in batch])
        self.published += len(done)
        with self.db.autocommit() as cur:
            outbox.record_published(cur, done)
            if error is not None:
                left = [oid for oid, _ in batch[len(done):]]
                log.warning("dispatcher: broker refused; %d run message(s) left to the relay: %s", len(left), error)
                outbox.record_refused(cur, left, error, release=True)  # the relay takes them now
