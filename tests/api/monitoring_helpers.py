"""Shared helpers for the monitoring Task tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support import ApiClient, LiveServer

WORKED = "Alert me when AAPL price rises significantly"
WORKED_STRATEGY = {"type": "change", "params": {"direction": "increase", "value": 0.10, "window": "1d"}}
TASK_FIELDS = ["task_id", "intent", "concept_id", "concept_version", "condition_id", "condition_version",
               "action_id", "action_version", "entity_scope", "status", "created_at", "last_triggered_at"]


def body(intent: str = WORKED, scope: str = "AAPL", **extra: Any) -> dict[str, Any]:
    return {"intent": intent, "entity_scope": scope, "delivery": {"type": "notification"}, **extra}


def create(client: ApiClient, intent: str = WORKED, scope: str = "AAPL", **extra: Any) -> Any:
    return client.post("/api/v1/tasks", json=body(intent, scope, **extra))


def created(client: ApiClient, intent: str = WORKED, scope: str = "AAPL", **extra: Any) -> dict[str, Any]:
    r = create(client, intent, scope, **extra)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@contextmanager
def server_with(settings: Any, db: Any, **overrides: Any) -> Iterator[ApiClient]:
    """A second live API with changed settings (same database and Redis), and a client for a
    fresh workspace on it."""
    import secrets

    from celery import current_app

    from api.app import create_app
    from shared.store import workspaces

    previous = current_app._get_current_object()
    app = create_app(settings.with_overrides(**overrides))
    previous.set_current()  # a new Celery app makes itself current; later tests must not inherit it
    srv = LiveServer(app)
    srv.start()
    try:
        ws = workspaces.get_or_create_workspace(db, f"test-{secrets.token_hex(6)}")
        yield ApiClient(srv.url, workspaces.create_key(db, ws.id))
    finally:
        srv.stop()
