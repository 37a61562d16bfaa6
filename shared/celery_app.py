"""The Celery application object: broker, routes, limits. Tasks live in workers/.

Routes are configuration, not call-site arguments: the task name's module decides the queue
(``workers.executions.*`` → ``executions``, …), an exact name first. One worker pool per queue.
Housekeeping (outbox sweep, requeue of stale runs, purge, webhook retry sweep) has a queue and
pool of its own, ``maintenance``, so a backlog of deliveries or runs never delays it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from celery import Celery

from shared.config import Settings
from shared.kombu_redis import TRANSPORT as REDIS_TRANSPORT

QUEUES = ("executions", "compiler", "evaluation", "delivery", "maintenance")

TASK_ROUTES = {
    "workers.delivery.alert_retry_sweep": {"queue": "maintenance"},
    "workers.executions.*": {"queue": "executions"},
    "workers.workflows.*": {"queue": "executions"},
    "workers.compiler.*": {"queue": "compiler"},
    "workers.evaluation.*": {"queue": "evaluation"},
    "workers.delivery.*": {"queue": "delivery"},
    "workers.maintenance.*": {"queue": "maintenance"},
}


def queue_for(task_name: str) -> str:
    for pattern, route in TASK_ROUTES.items():
        if task_name == pattern or (pattern.endswith("*") and task_name.startswith(pattern[:-1])):
            return route["queue"]
    raise ValueError(f"no route for task {task_name!r}")


PUBLIC_MAX_CONNECTIONS = 2048


def backstop_s(limit: int) -> int:
    """How long after a run's own time limit Celery's hard limit strikes."""
    return max(1, min(30, limit // 10))


def make_celery(settings: Settings, *, main: str = "warden") -> Celery:
    # Not made current: only the worker entry (workers/main.py) and tests choose the current app, so an
    # app built for the API, the relay or a test never hijacks what tasks see as current_app.
    app = Celery(main, broker=settings.broker_url, backend=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_routes=TASK_ROUTES,
        task_default_queue="executions",
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_expires=3600,
        # Long agent runs: take one message at a time so a busy worker does not hoard others.
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_connect_timeout": 3,
        },
        result_backend_transport_options={"socket_connect_timeout": 3},
        # Flower and `celery events` see task state changes only when asked (WARDEN_CELERY_EVENTS=1).
        worker_send_task_events=settings.celery_events,
        task_send_sent_event=settings.celery_events,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep-outbox": {
                "task": "workers.maintenance.sweep_outbox",
                "schedule": settings.outbox_sweep_s,
                "options": {"expires": max(settings.outbox_sweep_s * 2, 10)},
            },
        },
    )
    if urlsplit(settings.broker_url).scheme == "redis" and settings.kombu_patch:  # (rediss, sentinel: kombu's)
        app.conf.broker_transport = REDIS_TRANSPORT  # kombu's, changed at four seams (shared/kombu_redis.py)
        app.conf.broker_transport_options["take_batch"] = settings.broker_take_batch
    else:
        # kombu's own pool raises when all its connections are busy: allow as many as a gevent
        # worker's runs may use at once (they open lazily, while in use).
        app.conf.broker_transport_options["max_connections"] = PUBLIC_MAX_CONNECTIONS
    # Agent runs are bounded by configuration. The executor ends a run at its limit itself (error
    # with code time_limit, nothing else in the process disturbed); Celery's limits are a backstop a
    # little later (the gevent pool enforces only the hard one, by killing the greenlet). The Redis
    # visibility timeout is validated to exceed them (shared/config.py).
    limit = settings.executions_time_limit_s
    app.conf.task_annotations = {"workers.executions.run": {
        "soft_time_limit": limit + backstop_s(limit) / 2, "time_limit": limit + backstop_s(limit)}}
    app.conf.warden_settings = settings
    return app
