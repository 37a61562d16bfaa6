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


def on_starting(server):  # noqa: ARG001 - gunicorn hook signature
    # In the master, before any worker boots: a missing or placeholder WARDEN_SECRET_KEY (or any
    # other bad setting) stops gunicorn with one line instead of a traceback per worker.
    from shared.config import exit_on_config_error, process_settings

    exit_on_config_error(process_settings)


def post_fork(server, worker):  # noqa: ARG001 - gunicorn hook signature
    if worker_class == "gevent":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def post_worker_init(worker):
    # The app is loaded: build what its first requests would otherwise build on their way, and
    # open their connections beside the server (api.services.Services.warm and .connect).
    import threading

    services = getattr(worker.wsgi, "extensions", {}).get("warden")
    if services is not None:
        services.warm()
        threading.Thread(target=services.connect, name="warm-connections", daemon=True).start()
