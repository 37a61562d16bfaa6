"""Fixtures for executor tests: the fake LLM vendors (reached through their official SDKs,
configured by the environment variables the SDKs read) and helpers to run an execution."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.llm import FakeLLM
from tests.support import ApiClient, wait_for

TERMINAL = ("succeeded", "blocked", "error", "cancelled")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    env = {"OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": "sk-test-not-real",
           "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-ant-test-not-real"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield fake
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    fake.stop()


def model_name() -> str:
    return f"scripted-{secrets.token_hex(4)}"


def submit(client: ApiClient, **body: Any) -> str:
    r = client.post("/api/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()["execution_id"]


def wait_terminal(client: ApiClient, execution_id: str, timeout: float = 20.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        e = client.get(f"/api/v1/executions/{execution_id}").json()
        return e if e["status"] in TERMINAL else None

    def where() -> str:  # on a timeout: where the run stands, and its last events
        e = client.get(f"/api/v1/executions/{execution_id}").json()
        evs = client.get(f"/api/v1/executions/{execution_id}/events?limit=200").json().get("items", [])
        return (f"status {e.get('status')}, worker {e.get('worker')}; last events "
                f"{[(x['seq'], x['type'], (x.get('data') or {}).get('worker')) for x in evs[-6:]]}")

    return wait_for(done, timeout=timeout, what=f"{execution_id} terminal", on_fail=where)


def events(client: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/executions/{execution_id}/events?limit=1000").json()["items"]


def add_doc(client: ApiClient, name: str, content: str, labels: list[str] | None = None) -> str:
    r = client.post("/api/v1/documents", json={"name": name, "content": content, "labels": labels or []})
    assert r.status_code in (200, 201), r.text
    return r.json()["document_id"]


def assert_gapless(evs: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert sum(1 for e in evs if e["type"].split(".")[-1] in TERMINAL and e["type"].startswith("execution.")) == 1


def worker_process(settings: Any, name: str, *, pool: str = "gevent", concurrency: int = 200,
                   queues: str = "executions", loglevel: str = "WARNING", **env: str) -> Any:
    """A real Celery worker in its own process, as the Procfile starts one (gevent pool by
    default, as the executions pool runs), on this session's services; ``env`` adds WARDEN_*
    settings. Its output goes to a temp file that :func:`stop_process` prints if it failed."""
    import subprocess
    import sys
    import tempfile

    full = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "WARDEN_SECRET_KEY": settings.secret_key, "WARDEN_ALLOW_PRIVATE_WEBHOOKS": "1",
            "WARDEN_LOG_LEVEL": loglevel, "WARDEN_LOG_JSON": "0", **env}
    full.pop("WARDEN_SIGNING_KEY", None)
    log = tempfile.NamedTemporaryFile(prefix=f"worker-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-Q", queues, "--pool", pool,
         "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "-n", f"{name}@%h",
         "--without-mingle", "--without-gossip", "-l", loglevel],
        env=full, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name  # type: ignore[attr-defined]
    proc.node_name = name  # type: ignore[attr-defined]
    _started.append(proc)
    return proc


_started: list[Any] = []  # every worker_process of the session (see _no_worker_outlives_the_session)


@pytest.fixture(scope="session", autouse=True)
def _no_worker_outlives_the_session() -> Iterator[None]:
    """A test that failed before its own cleanup must not leave a worker behind: it would go on
    reconnecting to this session's Redis long after the session ended."""
    yield
    for proc in _started:
        stop_process(proc, timeout=5)


def stop_process(proc: Any, timeout: float = 15.0) -> None:
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def worker_log(proc: Any) -> str:
    with open(proc.log_path, errors="replace") as f:
        return f.read()[-4000:]


def wait_worker_ready(celery_app: Any, proc: Any, timeout: float = 60.0) -> None:
    """The worker started by :func:`worker_process` answers a ping: set up and consuming (an
    executions worker builds its model clients first, a second or two)."""
    import socket

    name = f"{proc.node_name}@{socket.gethostname()}"
    wait_for(lambda: proc.poll() is None and bool(celery_app.control.ping(destination=[name], timeout=0.5)),
             timeout=timeout, interval=0.2, what=f"{name} answering a ping", on_fail=lambda: worker_log(proc))
    assert proc.poll() is None, worker_log(proc)


def stop_consuming_executions(celery_app: Any, worker: Any) -> None:
    """The session's in-process worker stops consuming ``executions`` and holds no run message
    any more (none running, reserved or scheduled to retry), confirmed by asking it: a run
    message starts whichever run is oldest in the queue (fair share), so a message it still held
    from an earlier test would start this test's run in the pytest process."""
    def stopped() -> bool:
        celery_app.control.cancel_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)
        inspect = celery_app.control.inspect(destination=[worker.hostname], timeout=5)
        queues = inspect.active_queues() or {}
        if worker.hostname not in queues or any(q["name"] == "executions" for q in queues[worker.hostname]):
            return False
        return not _held_run_messages(inspect, worker)

    wait_for(stopped, timeout=30, interval=0.5, what="the in-process worker no longer consuming executions")


def _held_run_messages(inspect: Any, worker: Any) -> list[dict[str, Any]]:
    """The run messages the in-process worker holds: running, reserved or scheduled to retry."""
    held = [*((inspect.active() or {}).get(worker.hostname, [])),
            *((inspect.reserved() or {}).get(worker.hostname, [])),
            *(s.get("request", {}) for s in (inspect.scheduled() or {}).get(worker.hostname, []))]
    return [t for t in held if str(t.get("name", "")).startswith("workers.executions.")]


def wait_no_run_messages(celery_app: Any, worker: Any, db: Any, broker_url: str) -> None:
    """No run message anywhere: none unpublished in the outbox, none in the broker's queue, none
    held by the in-process worker. A run message starts whichever run is oldest (fair share), so
    one left over from an earlier test (coming back to retry, say) would start a run a test means
    to leave queued."""
    import redis as redis_lib

    broker = redis_lib.Redis.from_url(broker_url)

    def quiet() -> bool:
        if db.fetchone("SELECT count(*) AS n FROM outbox WHERE dispatched_at IS NULL AND queue = 'executions'")["n"]:
            return False
        if broker.llen("executions"):
            return False
        return not _held_run_messages(celery_app.control.inspect(destination=[worker.hostname], timeout=5), worker)

    try:
        wait_for(quiet, timeout=30, interval=0.2, what="no run message in the outbox, the broker or the worker")
    finally:
        broker.close()


@pytest.fixture()
def own_executions_queue(celery_app: Any, worker: Any) -> Iterator[None]:
    """The session's in-process worker stops consuming ``executions`` for the test (which starts
    its own worker processes), and resumes after."""
    stop_consuming_executions(celery_app, worker)
    try:
        yield
    finally:
        celery_app.control.add_consumer("executions", destination=[worker.hostname], reply=True, timeout=5)
