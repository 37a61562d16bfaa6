"""Celery entry point: ``celery -A workers.main worker -Q executions``.

This is a process entry, so it reads the environment once here and builds the app; task
modules only declare tasks.
"""

from __future__ import annotations

from celery.signals import worker_process_init

from shared import logs
from shared.celery_app import make_celery
from shared.config import load_settings
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

settings = load_settings()
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


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    # Pools are per process and created lazily in workers.runtime; nothing inherited is reused.
    logs.configure(settings.log_level, settings.log_json)
