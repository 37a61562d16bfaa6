"""``workers.compiler.compile`` on a real worker: answers as data on the reply list and in the
result backend, CompileErrors as data, and an unexpected failure answered (then raised)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support import wait_for
from workers.compiler import REPLY_TTL_S

TASK = "workers.compiler.compile"


def _request(**overrides: Any) -> dict[str, Any]:
    return {"intent": "Alert me when AAPL price rises significantly", "entity_scope": "AAPL",
            "delivery": {"type": "notification"}, "constraints": None, "workspace_id": None,
            "guardrails_revision": 0, "allow_private_webhooks": False, **overrides}


def _reply(redis_client: Any, key: str) -> dict[str, Any]:
    item = redis_client.blpop([key], timeout=10)
    assert item is not None, "no reply within 10 s"
    return json.loads(item[1])  # type: ignore[no-any-return]


@pytest.fixture()
def redis_client(settings):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(settings.redis_url)


def test_compiles_and_replies(worker, celery_app, redis_client):
    key = f"test:reply:{uuid.uuid4().hex}"
    result = celery_app.send_task(TASK, kwargs={"request": _request(), "reply_to": key})
    # Before anyone takes the reply: it is there, and it expires (a reply nobody waits for any
    # more must not stay in Redis).
    wait_for(lambda: redis_client.exists(key), timeout=10)
    assert 0 < redis_client.ttl(key) <= REPLY_TTL_S
    answer = _reply(redis_client, key)
    assert answer["ok"] is True
    assert answer["compiled"]["condition"]["strategy"] == {
        "type": "change", "params": {"direction": "increase", "value": 0.1, "window": "1d"}}
    assert result.get(timeout=10) == answer  # ignore_result=False: also in the result backend
    assert not redis_client.exists(key)  # taken: nothing left behind


@pytest.mark.parametrize(("overrides", "code"), [
    ({"intent": "hello there"}, "no_primitive"),
    ({"delivery": {"type": "webhook", "endpoint": "http://myapp.com/hook"}}, "action_binding_failed"),
    ({"delivery": {"type": "webhook", "endpoint": "https://192.168.1.10/hook"}}, "action_binding_failed"),
    ({"constraints": {"sensitivity": "extreme"}}, "invalid_request"),
])
def test_failures_are_answers(worker, celery_app, redis_client, overrides, code):
    key = f"test:reply:{uuid.uuid4().hex}"
    celery_app.send_task(TASK, kwargs={"request": _request(**overrides), "reply_to": key})
    answer = _reply(redis_client, key)
    assert answer["ok"] is False and answer["error"]["code"] == code and answer["error"]["message"]


def test_private_webhook_allowed_when_configured(worker, celery_app, redis_client):
    key = f"test:reply:{uuid.uuid4().hex}"
    req = _request(delivery={"type": "webhook", "endpoint": "http://127.0.0.1:9/hook"}, allow_private_webhooks=True)
    celery_app.send_task(TASK, kwargs={"request": req, "reply_to": key})
    assert _reply(redis_client, key)["ok"] is True


def test_unexpected_failure_is_answered_then_raised(worker, celery_app, redis_client, workspace):
    key = f"test:reply:{uuid.uuid4().hex}"
    # a guardrails revision that does not exist cannot happen through the API; here it stands in
    # for any bug: the caller gets an answer at once instead of waiting out its timeout
    result = celery_app.send_task(TASK, kwargs={"request": _request(workspace_id=workspace[0],
                                                                    guardrails_revision=99), "reply_to": key})
    answer = _reply(redis_client, key)
    assert answer == {"ok": False, "error": {"code": "internal_error", "message": "The compiler failed unexpectedly",
                                             "trace": []}}
    with pytest.raises(LookupError):
        result.get(timeout=10)
