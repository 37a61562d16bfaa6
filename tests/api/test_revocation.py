"""A revoked key is refused at once, though API processes remember verified keys
(shared/revocation.py): the rate-limit verdict carries the revocation count."""

from __future__ import annotations

import json

import pytest
import websocket

from tests.support import ApiClient, LiveServer, run_warden


def test_a_revoked_key_is_refused_at_once_by_a_process_that_remembers_keys(settings, db, workspace) -> None:
    from api.app import create_app
    from shared import revocation
    from shared.store import workspaces

    server = LiveServer(create_app(settings.with_overrides(auth_cache_s=600.0)))
    server.start()
    try:
        ws, key = workspace
        other = workspaces.create_key(db, ws)
        a, b = ApiClient(server.url, key), ApiClient(server.url, other)
        assert a.get("/api/v1/executions").status_code == 200
        assert b.get("/api/v1/executions").status_code == 200
        assert workspaces.revoke_key(db, key)
        # the process remembers the key: the database alone does not reach it (what the count is for)
        assert a.get("/api/v1/executions").status_code == 200
        revocation.announce(settings.redis_url)
        r = a.get("/api/v1/executions")
        assert r.status_code == 401 and r.json()["detail"]["code"] == "unauthorized"
        assert a.get("/api/v1/executions").status_code == 401
        assert b.get("/api/v1/executions").status_code == 200  # the workspace's other key is untouched

        # `warden revoke-key` does both: the database, then the count
        done = run_warden("revoke-key", other, DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url)
        assert done.returncode == 0 and done.stdout.strip() == "revoked", done.stderr
        assert b.get("/api/v1/executions").status_code == 401
    finally:
        server.stop()


def test_a_stream_token_dies_with_the_key_it_was_issued_to(server, db, workspace) -> None:
    from shared.store import workspaces

    ws, key = workspace
    other = workspaces.create_key(db, ws)
    mine = ApiClient(server.url, key).post("/api/v1/tasks", {"task": "List my documents"}).json()
    theirs = ApiClient(server.url, other).post("/api/v1/tasks", {"task": "List my documents"}).json()
    conn = websocket.create_connection(mine["websocket_url"], timeout=10)
    conn.close()
    assert workspaces.revoke_key(db, key)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(mine["websocket_url"], timeout=10)
    assert refused.value.status_code == 401
    assert "revoked" in json.loads(refused.value.resp_body)["detail"]["message"]
    conn = websocket.create_connection(theirs["websocket_url"], timeout=10)  # the other key's token still works
    conn.close()
