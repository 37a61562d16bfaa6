"""Celery entry point: ``celery -A workers.main worker -Q executions``.

This is a process entry, so it reads the environment once here and builds the app; task
modules only declare tasks.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery.signals import worker_init, worker_process_init

from shared import logs
from shared.celery_app import make_celery
from shared.config import exit_on_config_error, process_settings
from workers import TASK_MODULES


def _cooperative_psycopg2() -> None:
    """Under the gevent pool (``-P gevent``, how the executions pool runs: many runs in flight per
    process, each mostly waiting on its model), Celery has monkey-patched the standard library
    before importing this module; psycopg2 is C and must be told to yield too (psycogreen), or one
    run's query would block every other run in the process."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return
    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


_cooperative_psycopg2()

settings = exit_on_config_error(process_settings)  # one line and exit 2 without a real secret
logs.configure(settings.log_level, settings.log_json)
app = make_celery(settings)
app.set_default()  # the process entry: tasks and workers.runtime see this app as current
app.set_current()
# Runs whose worker died are found by their expired lease: look a few times per lease.
app.conf.beat_schedule["requeue-stale"] = {"task": "workers.maintenance.requeue_stale",
                                           "schedule": min(60.0, max(2.0, settings.lease_s / 2))}
app.conf.beat_schedule["purge"] = {"task": "workers.maintenance.purge", "schedule": 3600.0}
app.conf.beat_schedule["absence"] = {"task": "workers.evaluation.absence_sweep", "schedule": 10.0}
app.conf.beat_schedule["alert-retries"] = {"task": "workers.delivery.alert_retry_sweep", "schedule": 15.0}
for _module in TASK_MODULES:
    __import__(_module)


@worker_init.connect
def _warm_executions(sender: Any, **_: object) -> None:
    """An executions worker imports the model SDKs and builds its shared clients before it
    consumes, rather than on the first burst of runs (workers.providers.warm)."""
    if "executions" in sender.app.amqp.queues.consume_from:  # sender: the WorkController
        from workers.providers import warm

        logging.getLogger(__name__).info("model clients ready: %s", ", ".join(warm(settings)) or "none configured")
        _quiet_gc()


# The executions worker's cyclic garbage collector, measured with a thousand runs in flight
# (bench_inflight): with the defaults (700, 10, 10) it ran about 800 times during the burst and each
# full pass walked some 450,000 objects, most of them the imports and clients that live as long as
# the process: about a sixth of the worker's CPU. gc.freeze() moves what exists after start-up out
# of the collector's sight, and a larger first threshold makes young collections 14 times rarer.
# Memory held by cycles between passes stays small (runs free most of theirs by reference count).
GC_THRESHOLDS = (10_000, 20, 20)


def _quiet_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pools are per process and created lazily in workers.runtime; nothing inherited is reused.
    logs.configure(settings.log_level, settings.log_json)
