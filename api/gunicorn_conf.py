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
# One line per request on stdout when WARDEN_ACCESS_LOG=1 (`make run` sets it); off otherwise.
accesslog = "-" if os.environ.get("WARDEN_ACCESS_LOG", "0") == "1" else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
# gunicorn's control socket (gunicornc) is off unless a path is given: its default is one shared
# path in the home folder, where two checkouts or two deployments would replace each other's.
# `make run` puts it in the checkout's .warden/.
_control = os.environ.get("WARDEN_GUNICORN_CONTROL_SOCKET", "")
if _control:
    control_socket = _control
control_socket_disable = not _control
loglevel = os.environ.get("WARDEN_LOG_LEVEL", "info").lower()


def post_fork(server, worker):  # noqa: ARG001 - gunicorn hook signature
    if worker_class == "gevent":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
