"""PostgreSQL stopped and started under a live API: 503 with Retry-After while it is down, never a
500, and the dead pooled connections replaced by the API itself once it is back.

The test owns its PostgreSQL (an EmbeddedPostgres in a temp dir) and Redis, so stopping them
touches no other test.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import ApiClient, LiveServer
from tests.workers.ownstack import service_dir


class OwnDatabaseApi:
    def __init__(self, settings: Any, tmp: Path) -> None:
        from api.app import create_app
        from shared.db import Database
        from shared.migrate import migrate
        from shared.store import workspaces
        from warden.services import EmbeddedPostgres, EmbeddedRedis

        self.pg = EmbeddedPostgres(tmp / "pg")
        self.url = self.pg.start("warden")
        migrate(self.url)
        self.redis = EmbeddedRedis(tmp / "redis", persist=False)
        self.settings = settings.with_overrides(database_url=self.url, redis_url=self.redis.start())
        db = Database(self.url, maxconn=2)
        ws = workspaces.get_or_create_workspace(db, "outage")
        key = workspaces.create_key(db, ws.id)
        db.close()
        self.server = LiveServer(create_app(self.settings))
        self.server.start()
        self.client = ApiClient(self.server.url, key)

    def stop_db(self) -> None:
        self.pg.stop()

    def start_db(self) -> None:
        assert self.pg.start("warden") == self.url

    def stop(self) -> None:
        self.server.stop()
        self.pg.stop()
        self.redis.stop()


@pytest.fixture()
def own_db_api(settings: Any) -> Iterator[OwnDatabaseApi]:
    with service_dir() as tmp:
        api = OwnDatabaseApi(settings, tmp)
        try:
            yield api
        finally:
            api.stop()


def _burst(client: ApiClient, n: int, width: int = 8) -> list[Any]:
    """``n`` list requests, ``width`` at a time (so the pool holds several connections)."""
    with ThreadPoolExecutor(width) as pool:
        return list(pool.map(lambda _: client.get("/api/v1/executions"), range(n)))


def test_503_with_retry_after_while_down_and_recovers_by_itself(own_db_api: OwnDatabaseApi):
    api, client = own_db_api, own_db_api.client
    assert [r.status_code for r in _burst(client, 16)] == [200] * 16  # several pooled connections now

    api.stop_db()
    down = [*_burst(client, 12), client.post("/api/v1/tasks", json={"task": "Say hello"}),
            client.get("/api/v1/notifications")]
    for r in down:
        assert r.status_code == 503, (r.status_code, r.text)
        detail = r.json()["detail"]
        assert detail["code"] == "database_unavailable" and detail["retry_after"] >= 1
        assert int(r.headers["Retry-After"]) == detail["retry_after"]

    api.start_db()
    # Back: the very first request and every one after it succeed (no dead pooled connection used).
    assert client.get("/api/v1/executions").status_code == 200
    assert [r.status_code for r in _burst(client, 24)] == [200] * 24
    assert client.post("/api/v1/tasks", json={"task": "Say hello"}).status_code == 201


def test_restart_between_requests_costs_no_request(own_db_api: OwnDatabaseApi):
    """Every idle pooled connection dies with the server; none of them may fail a request."""
    api, client = own_db_api, own_db_api.client
    assert [r.status_code for r in _burst(client, 16)] == [200] * 16
    api.stop_db()
    api.start_db()
    assert [r.status_code for r in _burst(client, 24)] == [200] * 24
