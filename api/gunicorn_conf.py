"""gunicorn settings for the API. gevent workers: one process holds many idle WebSocket
connections cheaply; psycopg2 is made cooperative right after the worker forks."""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = os.environ.get("WARDEN_GUNICORN_WORKER_CLASS", "gevent")
workers = int(os.environ.get("WEB_CONCURRENCY", str(max(2, multiprocessing.cpu_count()))))
worker_connections = int(os.environ.get("WARDEN_WORKER_CONNECTIONS", "2000"))
keepalive = 5
timeout = 60
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = os.environ.get("WARDEN_LOG_LEVEL", "info").lower()


def post_fork(server, worker):  # noqa: ARG001 - gunicorn hook signature
    if worker_class == "gevent":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
