"""Group commit: rows from concurrent callers written by one statement, committed once.

Under 50 concurrent intake requests each single-row insert paid its own round trip, its own
parse and plan of the three-table statement and its own WAL flush: PostgreSQL spent about four
times the bare baseline's CPU per execution. With a :class:`GroupWriter` the first caller that
finds no batch in flight writes at once (a lone request waits for nothing); callers arriving
while a batch is in flight queue, and when it commits the first of them leads the next batch
with everything queued behind it. So batches form only under concurrency, and only as large as
the concurrency. Each caller returns after *its own* row is committed, with its own result or
its own exception: a batch that fails is retried row by row so that one bad row fails alone
(connection trouble is not retried; it is every row's answer).

Hand-written because no library offers group commit for psycopg2 that works alike under
gevent (gunicorn's worker: ``threading`` is monkey-patched, so the lock and events here are
cooperative) and plain threads (the Flask test server, workers).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import psycopg2

from shared.errors import ServiceUnavailable

T = TypeVar("T")
R = TypeVar("R")

#: Errors that are every row's answer (the batch is not retried row by row).
UNRETRIED = (ServiceUnavailable, psycopg2.OperationalError, psycopg2.InterfaceError)


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.lead = False
        self.done: threading.Event | None = None

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupWriter(Generic[T, R]):
    """``submit(item)`` returns ``write([... item ...])``'s entry for ``item``.

    ``write`` receives a non-empty list and must return one result per item, in order, having
    committed them all (or raise, having committed none).
    """

    def __init__(self, write: Callable[[list[T]], Sequence[R]], *, max_batch: int = 64) -> None:
        self._write = write
        self.max_batch = max_batch
        self.batches = 0  # statements issued by this process (tests, debugging)
        self._pid = 0
        self._lock: threading.Lock | None = None
        self._queue: deque[_Slot[T, R]] = deque()
        self._busy = False

    def _guard(self) -> threading.Lock:
        lock = self._lock
        if lock is None or self._pid != os.getpid():
            # Looked up now, after gevent's monkey-patching, and again after a fork.
            lock = self._lock = threading.Lock()
            self._queue = deque()
            self._busy = False
            self._pid = os.getpid()
        return lock

    @property
    def waiting(self) -> int:
        """Callers queued behind the group being written (a measure of this process's load)."""
        return len(self._queue)

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._guard():
            if self._busy:
                slot.done = threading.Event()
                self._queue.append(slot)
            else:
                self._busy = True
                slot.lead = True
        if not slot.lead:
            assert slot.done is not None
            slot.done.wait()
            if not slot.lead:  # written by a leader
                return slot.outcome()
        self._lead(slot)
        return slot.outcome()

    def _lead(self, own: _Slot[T, R]) -> None:
        lock = self._guard()
        batch = [own]
        try:
            with lock:
                while self._queue and len(batch) < self.max_batch:
                    batch.append(self._queue.popleft())
            self._run(batch)
        finally:
            for slot in batch[1:]:
                assert slot.done is not None
                slot.done.set()
            with lock:
                if self._queue:  # the next leader writes what queued meanwhile
                    nxt = self._queue.popleft()
                    nxt.lead = True
                    assert nxt.done is not None
                    nxt.done.set()
                else:
                    self._busy = False

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([s.item for s in batch])
            self.batches += 1
            if len(results) != len(batch):
                raise RuntimeError(f"group write returned {len(results)} results for {len(batch)} rows")
        except UNRETRIED as exc:
            for s in batch:
                s.error = exc
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for s in batch:  # one bad row must not fail the others
                try:
                    s.result = self._write([s.item])[0]
                except Exception as one:
                    s.error = one
            return
        except BaseException as exc:  # a greenlet killed mid-write: nobody's row is known to be in
            for s in batch:
                s.error = exc
            raise
        for s, r in zip(batch, results, strict=True):
            s.result = r
