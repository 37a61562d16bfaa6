"""Celery task modules. Each pool imports all of them; routing decides who runs what."""

TASK_MODULES = (
    "workers.executions",
    "workers.maintenance",
    "workers.delivery",
    "workers.compiler",
    "workers.evaluation",
    "workers.alert_delivery",
    "workers.replay",
    "workers.workflows",
)
