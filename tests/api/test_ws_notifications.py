"""/ws/notifications: a notification-bound Task fires and a connected client receives it live;
`after` replays what was missed; credentials are required."""

from __future__ import annotations

import json
import secrets

import pytest
import websocket

from tests.support import ApiClient
from tests.workers.signals_helpers import make_task, send, settled


def _connect(url: str, **kw) -> websocket.WebSocket:  # type: ignore[no-untyped-def]
    return websocket.create_connection(url, timeout=10, **kw)


def test_live_notification_then_replay_after(stack, client: ApiClient, db, workspace) -> None:  # type: ignore[no-untyped-def]
    stream = client.get("/api/v1/notifications/stream").json()["websocket_url"]
    assert "/ws/notifications?token=" in stream
    ws = _connect(stream)
    try:
        entity = f"N{secrets.token_hex(3)}"
        task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
        send(client, entity, "price", [(0, 150), (1, 250)])
        first = json.loads(ws.recv())
        assert first["task_id"] == task["task_id"] and first["read"] is False
        send(client, entity, "price", [(2, 100), (3, 300)])  # re-armed, fires again
        second = json.loads(ws.recv())
        assert second["notification_id"] > first["notification_id"]
    finally:
        ws.close()
    settled(db, workspace[0])
    listed = client.get("/api/v1/notifications").json()["items"]
    assert {n["notification_id"] for n in listed} == {first["notification_id"], second["notification_id"]}

    # Reconnect with the header and after=<first>: the second is replayed, once.
    replay = _connect(stream.split("/ws/")[0] + f"/ws/notifications?after={first['notification_id']}",
                      header=[f"Authorization: Bearer {client.key}"])
    try:
        assert json.loads(replay.recv())["notification_id"] == second["notification_id"]
        replay.settimeout(0.5)
        with pytest.raises(websocket.WebSocketTimeoutException):
            replay.recv()
    finally:
        replay.close()


def test_credentials_are_required(server) -> None:  # type: ignore[no-untyped-def]
    base = server.url.replace("http://", "ws://")
    for url in (f"{base}/ws/notifications", f"{base}/ws/notifications?token=forged"):
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            _connect(url)
        assert err.value.status_code == 401
