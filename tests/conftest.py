"""Test harness: real PostgreSQL, real Redis, a real Celery worker, a real HTTP server.

Services: DATABASE_URL / REDIS_URL when set (a fresh database and a flushed Redis db are used
inside them), otherwise embedded ones started for this session in a temp dir. Every fixture is
lazy: the pure guard/compiler tests start nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis as redis_lib

from shared.config import Settings, load_settings
from tests.support import ApiClient, LiveServer


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    from shared.migrate import create_database
    from warden.services import EmbeddedPostgres, EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="warden-test-"))
    started: list[Any] = []
    dbname = f"warden_test_{secrets.token_hex(4)}"
    admin_url = os.environ.get("DATABASE_URL")
    try:
        if admin_url:
            create_database(admin_url, dbname)
            db_url = _with_db(admin_url, dbname)
        else:
            pg = EmbeddedPostgres(tmp / "pgdata")
            db_url = pg.start(dbname)
            started.append(pg)
        redis_url = os.environ.get("REDIS_URL")
        if redis_url:
            redis_url = _with_redis_db(redis_url, 1 + secrets.randbelow(15))
        else:
            r = EmbeddedRedis(tmp / "redis", persist=False)
            redis_url = r.start()
            started.append(r)
        redis_lib.Redis.from_url(redis_url).flushdb()
        from shared.migrate import migrate

        migrate(db_url)
        yield {"database_url": db_url, "redis_url": redis_url}
    finally:
        for svc in reversed(started):
            svc.stop()
        if admin_url:
            _drop_database(admin_url, dbname)
        shutil.rmtree(tmp, ignore_errors=True)


def _with_db(url: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _with_redis_db(url: str, index: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{index}"))


def _drop_database(admin_url: str, dbname: str) -> None:
    from shared.migrate import drop_database

    with contextlib.suppress(psycopg2.Error):
        drop_database(admin_url, dbname)


@pytest.fixture(scope="session")
def settings(service_urls: dict[str, str]) -> Settings:
    base = load_settings({})
    return base.with_overrides(
        database_url=service_urls["database_url"], redis_url=service_urls["redis_url"],
        secret_key="test-secret", allow_private_webhooks=True, rate_limit_per_s=10000.0,
        rate_limit_burst=100000, log_json=False, log_level="WARNING", outbox_sweep_s=1.0,
        openai_api_key=None, anthropic_api_key=None, default_provider="local", default_model=None,
        public_url=None, auth_cache_s=0.0, webhook_backoff_s=0.2,
    )


@pytest.fixture(scope="session")
def db(settings: Settings):  # type: ignore[no-untyped-def]
    from shared.db import Database

    database = Database(settings.database_url, maxconn=10)
    yield database
    database.close()


@pytest.fixture(scope="session")
def celery_app(settings: Settings):  # type: ignore[no-untyped-def]
    import workers
    from shared.celery_app import make_celery

    app = make_celery(settings, main="warden-test")
    for module in workers.TASK_MODULES:
        __import__(module)
    app.set_default()
    app.set_current()
    return app


@pytest.fixture(scope="session")
def worker(celery_app: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming every queue, for the whole session."""
    from celery.contrib.testing.worker import start_worker

    from shared.celery_app import QUEUES

    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False,
                      queues=list(QUEUES), loglevel="WARNING", shutdown_timeout=10) as w:
        yield w


@pytest.fixture(scope="session")
def relay(db: Any, celery_app: Any, settings: Settings) -> Iterator[threading.Event]:
    from shared.outbox import run_relay

    stop = threading.Event()
    t = threading.Thread(target=run_relay, args=(db, celery_app, settings.redis_url),
                         kwargs={"sweep_s": 0.5, "stop": stop},
                         daemon=True, name="outbox-relay")
    t.start()
    yield stop
    stop.set()
    t.join(5)


@pytest.fixture(scope="session")
def app(settings: Settings):  # type: ignore[no-untyped-def]
    from api.app import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def server(app: Any) -> Iterator[LiveServer]:
    srv = LiveServer(app)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def workspace(db: Any) -> tuple[str, str]:
    """A fresh workspace and key per test: tests never see each other's rows."""
    from shared.store import workspaces

    ws = workspaces.get_or_create_workspace(db, f"test-{secrets.token_hex(6)}")
    return ws.id, workspaces.create_key(db, ws.id)


@pytest.fixture()
def client(server: LiveServer, workspace: tuple[str, str]) -> ApiClient:
    return ApiClient(server.url, workspace[1])


@pytest.fixture()
def stack(server: LiveServer, worker: Any, relay: Any) -> LiveServer:
    """The whole path: HTTP server, outbox relay and a Celery worker."""
    return server


@pytest.fixture(scope="session")
def fuzz_workspace(db: Any) -> tuple[str, str]:
    from shared.store import workspaces

    ws = workspaces.get_or_create_workspace(db, f"fuzz-{secrets.token_hex(4)}")
    return ws.id, workspaces.create_key(db, ws.id)


@pytest.fixture(scope="session")
def client_fixed(server: LiveServer, fuzz_workspace: tuple[str, str]) -> ApiClient:
    """One client for a whole hypothesis run (function-scoped fixtures do not reset per example)."""
    return ApiClient(server.url, fuzz_workspace[1])


@pytest.fixture(scope="session")
def api_key(fuzz_workspace: tuple[str, str]) -> str:
    return fuzz_workspace[1]

