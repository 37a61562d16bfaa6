"""webhook_url: the final execution POSTed on the `delivery` queue, signed per Standard Webhooks
with the workspace secret, retried with backoff after a failure, attempts visible."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared import webhooks
from tests.fakes.receiver import Receiver
from tests.support import wait_for
from tests.workers.conftest import submit, wait_terminal


def test_signed_and_retried(stack, client, db, workspace):
    rec = Receiver(statuses=[500])  # fails first, then 200
    try:
        eid = submit(client, task="Say hello", webhook_url=rec.url + "/hook")
        wait_terminal(client, eid)
        e = wait_for(lambda: (x := client.get(f"/api/v1/executions/{eid}").json())["webhook"]["status"] == "delivered"
                     and x, timeout=15)
        hook = e["webhook"]
        assert hook["attempt_count"] == 2
        assert [a["status_code"] for a in hook["attempts"]] == [500, 200]
        assert len(rec.requests) == 2
        secret = db.fetchone("SELECT webhook_secret FROM workspaces WHERE id = %s", (workspace[0],))["webhook_secret"]
        ids = set()
        for r in rec.requests:
            assert r["method"] == "POST" and r["path"] == "/hook"
            h = {k.lower(): v for k, v in r["headers"].items()}
            assert h["webhook-signature"].startswith("v1,")
            assert webhooks.verify(secret, h, r["body"])
            assert not webhooks.verify("whsec_wrong", h, r["body"])
            ids.add(h["webhook-id"])
        assert len(ids) == 1 and ids == {hook["webhook_id"]}  # stable across retries
        body = json.loads(rec.requests[-1]["body"])
        assert body["execution_id"] == eid and body["status"] == "succeeded" and body["result"]["output"]
    finally:
        rec.stop()


@pytest.fixture()
def worker_settings(celery_app: Any) -> Iterator[Any]:
    """Change what the in-process worker sees (restored afterwards)."""
    saved = celery_app.conf.warden_settings

    def apply(**changes: Any) -> None:
        celery_app.conf.warden_settings = saved.with_overrides(**changes)

    yield apply
    celery_app.conf.warden_settings = saved


def _hook(client, eid: str) -> dict[str, Any]:
    return client.get(f"/api/v1/executions/{eid}").json()["webhook"]


def _failure_notice(client, eid: str) -> dict[str, Any] | None:
    items = client.get("/api/v1/notifications").json()["items"]
    return next((n for n in items if n["body"].get("execution_id") == eid), None)


def test_gives_up_after_finite_retries(stack, client, worker_settings):
    worker_settings(webhook_backoff_s=0.01)  # 0.01 s × 4^n: the whole schedule in about 3.4 s
    rec = Receiver(statuses=[503] * 20)
    try:
        eid = submit(client, task="Say hello", webhook_url=rec.url + "/hook")
        wait_terminal(client, eid)
        hook = wait_for(lambda: (h := _hook(client, eid))["status"] != "pending" and h, timeout=30)
        assert hook["status"] == "failed" and hook["last_error"] == "HTTP 503"
        assert hook["attempt_count"] == 1 + webhooks.MAX_RETRIES
        assert [a["status_code"] for a in hook["attempts"]] == [503] * (1 + webhooks.MAX_RETRIES)
        assert len(rec.requests) == 1 + webhooks.MAX_RETRIES  # and not one more
        notice = wait_for(lambda: _failure_notice(client, eid), timeout=5)
        assert notice["body"]["attempts"] == 1 + webhooks.MAX_RETRIES
        assert notice["body"]["delivery_id"] == hook["delivery_id"]
    finally:
        rec.stop()


def test_410_stops_at_once(stack, client):
    rec = Receiver(statuses=[410, 200])
    try:
        eid = submit(client, task="Say hello", webhook_url=rec.url + "/hook")
        wait_terminal(client, eid)
        hook = wait_for(lambda: (h := _hook(client, eid))["status"] != "pending" and h, timeout=15)
        assert hook["status"] == "failed" and hook["attempt_count"] == 1 and "410" in hook["last_error"]
        assert wait_for(lambda: _failure_notice(client, eid), timeout=5)["body"]["last_status_code"] == 410
        assert len(rec.requests) == 1
    finally:
        rec.stop()


def test_retry_after_is_honoured(stack, client):
    # Backoff after the first attempt is 0.2 s in tests; the receiver asks for 2 s.
    rec = Receiver(statuses=[(503, {"Retry-After": "2"})])
    try:
        eid = submit(client, task="Say hello", webhook_url=rec.url + "/hook")
        wait_terminal(client, eid)
        hook = wait_for(lambda: (h := _hook(client, eid))["status"] == "delivered" and h, timeout=15)
        assert [a["status_code"] for a in hook["attempts"]] == [503, 200]
        assert rec.requests[1]["at"] - rec.requests[0]["at"] >= 1.9
    finally:
        rec.stop()


def test_sign_matches_standard_webhooks_reference():
    # Test vector from the Standard Webhooks specification's reference implementations.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    sig = webhooks.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
