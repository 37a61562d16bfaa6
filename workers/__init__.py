"""Celery task modules. Each pool imports all of them; routing decides who runs what."""

TASK_MODULES = (
    "workers.executions",
    "workers.maintenance",
    "workers.delivery",
    "workers.compiler",
)
