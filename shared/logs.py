"""Structured JSON logs carrying the request id / execution id of the work in hand."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
execution_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("execution_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        eid = execution_id_var.get()
        if eid:
            out["execution_id"] = eid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "INFO", json_format: bool = True) -> None:
    # The process's real stderr: in a Celery prefork child ``sys.stderr`` is Celery's proxy, which
    # turns writes into log records of its own; a handler writing to it is dropped by the proxy's
    # recursion guard, and every log line of a child (a task's error included) was lost.
    handler = logging.StreamHandler(sys.__stderr__ if sys.__stderr__ is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The model SDKs' HTTP library logs a line per request at INFO ("HTTP Request: POST …"): two
    # lines a run, with nothing the run's own events (llm.completed) do not already say; with a
    # thousand runs in flight they were 2,000 lines and a few percent of an executions worker's
    # profile samples. Shown at DEBUG; their warnings and errors always.
    quiet = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for name in HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


HTTP_CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
