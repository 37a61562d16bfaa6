"""Prometheus metrics: request counts and latency per route, plus gauges read at scrape time
(executions by status, outbox backlog, queue depth) so they are right across processes.

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (``warden dev`` does) and the
request metrics are aggregated across worker processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from shared.celery_app import QUEUES

REQUESTS = Counter("warden_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("warden_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class StateCollector:
    """Reads shared state on scrape: the same answer from every API process."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self):  # type: ignore[no-untyped-def]
        from shared.outbox import pending_count
        from shared.store.executions import STATUSES, count_by_status
        from shared.store.workspaces import executions_by_workspace

        svc = self.services
        by_status = GaugeMetricFamily("warden_executions", "Executions by status", labels=["status"])
        backlog = GaugeMetricFamily("warden_outbox_backlog", "Outbox rows not yet published to the broker")
        depth = GaugeMetricFamily("warden_queue_depth", "Messages waiting in each broker queue", labels=["queue"])
        running = GaugeMetricFamily("warden_workspace_running_executions", "Running executions per workspace",
                                    labels=["workspace"])
        waiting = GaugeMetricFamily("warden_workspace_queued_executions",
                                    "Executions waiting for a slot per workspace", labels=["workspace"])
        try:
            counts = count_by_status(svc.db)
            for status in STATUSES:
                by_status.add_metric([status], counts.get(status, 0))
            backlog.add_metric([], pending_count(svc.db))
            for row in executions_by_workspace(svc.db):
                running.add_metric([str(row["name"])], int(row["running"]))  # type: ignore[call-overload]
                waiting.add_metric([str(row["name"])], int(row["queued"]))  # type: ignore[call-overload]
        except Exception:  # noqa: S110 - a scrape must not fail because one source is down
            pass
        try:
            # Not while Redis does not answer: a scrape must not wait on a dead socket.
            if svc.settings.broker_url.startswith(("redis://", "rediss://", "unix://")) and svc.redis.answering:
                client = svc.redis.client
                for q in QUEUES:
                    depth.add_metric([q], client.llen(q))
        except Exception:  # noqa: S110
            pass
        yield by_status
        yield running
        yield waiting
        yield backlog
        yield depth


def init_app(app: Flask, services: Any) -> None:
    state = StateCollector(services)

    @app.before_request
    def _start() -> None:
        g._t0 = time.perf_counter()

    # (method, route, status) → its two children: labels() takes a lock and builds a key per call.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @app.after_request
    def _observe(response: Response) -> Response:
        t0 = g.pop("_t0", None)
        if t0 is not None:
            elapsed = time.perf_counter() - t0
            rule = request.url_rule
            route = rule.rule if rule is not None else "unmatched"
            key = (request.method, route, response.status_code)
            pair = children.get(key)
            if pair is None:
                if len(children) >= 4096:  # methods are client-chosen: keep the memo bounded
                    children.clear()
                pair = children[key] = (LATENCY.labels(key[0], route), REQUESTS.labels(key[0], route, str(key[2])))
            pair[0].observe(elapsed)
            pair[1].inc()
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            MultiProcessCollector(registry)
        else:
            registry.register(_Default())
        registry.register(state)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _Default:
    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client import REGISTRY

        yield from REGISTRY.collect()
