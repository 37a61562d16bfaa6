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


def test_a_notification_stream_that_cannot_catch_up_says_where_to_resume(own_db_api: OwnDatabaseApi):
    """A /ws/notifications stream re-reads the store after its hub reconnects to Redis; with
    PostgreSQL down then, it closes 1013 (try again later) naming the ``after`` to reconnect with,
    as a client closed for falling behind is told."""
    import websocket

    from tests.api.test_ws import read_until_close_reason

    api, client = own_db_api, own_db_api.client
    after = "ntf_01m99000000000000000000000"
    ws = websocket.create_connection(f"{api.server.url.replace('http', 'ws', 1)}/ws/notifications?after={after}",
                                     timeout=10, header=[f"Authorization: Bearer {client.key}"])
    api.stop_db()
    api.redis.stop()  # the hub loses Redis; once back, every stream re-reads the store
    api.redis.start()
    got, code, reason = read_until_close_reason(ws, timeout=30)
    assert got == [] and code == 1013 and reason.endswith(f"reconnect with after={after}"), (code, reason)
