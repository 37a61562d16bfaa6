"""Which runs this process owns, kept alive and watched: one monitor per process.

A run is owned through a lease on its row (shared/store/runs.py): a fencing token, bumped by
each claim, that every step's write checks, and an expiry that the write pushes forward. While a
run waits on its model no step is written, so the monitor renews the leases of all the process's
runs in one statement every third of the lease, and once a second asks which of them must stop:
a cancel was requested (the run ends ``cancelled`` without waiting for the model's answer), or
the run was lost (taken over after this process stalled past its lease, or ended elsewhere).

The monitor is a thread: under the gevent pool, whose monkey-patching makes it a greenlet, it
costs nothing while it sleeps, and its statements yield like any other (psycogreen).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.db import OUTAGE_ERRORS, first_line

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the process asks which of its runs were cancelled or lost


class Handle:
    """One owned run. ``wake`` is set when the run must look up from a wait: its model answered,
    or :attr:`stop` was set ("cancel" or "lost")."""

    __slots__ = ("id", "token", "wake", "stop")

    def __init__(self, execution_id: str, token: int) -> None:
        self.id = execution_id
        self.token = token
        self.wake = threading.Event()
        self.stop: str | None = None

    def interrupt(self, why: str) -> None:
        if self.stop is None:
            self.stop = why
        self.wake.set()


class Monitor:
    def __init__(self, db: Callable[[], Any], lease_s: float, poll_s: float = POLL_S) -> None:
        self._db = db
        self.lease_s = lease_s
        self.poll_s = poll_s
        self._runs: dict[str, Handle] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def own(self, execution_id: str, token: int) -> Handle:
        handle = Handle(execution_id, token)
        with self._lock:
            self._runs[execution_id] = handle
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="warden-leases", daemon=True)
                self._thread.start()
        return handle

    def release(self, handle: Handle) -> None:
        with self._lock:
            if self._runs.get(handle.id) is handle:
                del self._runs[handle.id]

    def owned(self) -> dict[str, int]:
        with self._lock:
            return {h.id: h.token for h in self._runs.values()}

    def _loop(self) -> None:
        from shared.store import runs

        renew_every = max(self.poll_s, self.lease_s / 3)
        renewed = time.monotonic()
        away_since: float | None = None  # the database stopped answering: said once, not every poll
        while True:
            time.sleep(self.poll_s)
            owned = self.owned()
            if not owned:
                continue
            try:
                with self._db().autocommit() as cur:
                    if time.monotonic() - renewed >= renew_every:
                        runs.renew(cur, owned, self.lease_s)
                        renewed = time.monotonic()
                    stops = runs.interrupted(cur, owned)
            except OUTAGE_ERRORS as exc:  # the database is away: the leases run out and others take over
                if away_since is None:
                    away_since = time.monotonic()
                    log.warning("lease monitor: cannot reach the database (%s); the leases of %d runs are not"
                                " renewed until it answers", first_line(exc), len(owned))
                continue
            except Exception:  # not an outage: a bug, said every time
                log.exception("lease monitor: renewing or watching %d runs failed", len(owned))
                continue
            if away_since is not None:
                log.warning("lease monitor: the database answers again after %.1f s", time.monotonic() - away_since)
                away_since = None
            if stops:
                with self._lock:
                    handles = [self._runs[i] for i in stops if i in self._runs]
                for h in handles:
                    if h.token == owned.get(h.id):
                        h.interrupt(stops[h.id])


_monitor: Monitor | None = None
_monitor_lock = threading.Lock()


def monitor(db: Callable[[], Any], lease_s: float) -> Monitor:
    """This process's monitor (created on first use, after any fork)."""
    global _monitor
    with _monitor_lock:
        if _monitor is None or _monitor.lease_s != lease_s:
            _monitor = Monitor(db, lease_s)
        return _monitor
