"""Alert delivery: Standard Webhooks signatures checked with the reference algorithm, retries on
500 and on timeout, 410 disables the binding, SSRF refusals at delivery time, notifications
(list, unread, read, Redis channel) and governed agent executions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis as redis_lib

from tests.fakes.receiver import Receiver
from tests.support import wait_for
from tests.workers.signals_helpers import alerts_of, make_task, send, settled


def reference_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks reference algorithm (standard-webhooks/libraries, python)."""
    h = {k.lower(): v for k, v in headers.items()}
    key = base64.b64decode(secret.removeprefix("whsec_"))
    to_sign = f"{h['webhook-id']}.{h['webhook-timestamp']}.{body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(h["webhook-timestamp"])) > 300:
        return False
    return any(hmac.compare_digest(expected, s.split(",", 1)[1]) for s in h["webhook-signature"].split()
               if s.startswith("v1,"))


@pytest.fixture()
def worker_settings(celery_app: Any, settings: Any) -> Iterator[Any]:
    """Change what the in-process worker sees (restored afterwards)."""
    saved = celery_app.conf.warden_settings

    def apply(**changes: Any) -> None:
        celery_app.conf.warden_settings = saved.with_overrides(**changes)

    yield apply
    celery_app.conf.warden_settings = saved


def fire_one(client: Any, delivery: dict[str, Any]) -> tuple[dict[str, Any], str]:
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity, delivery)
    send(client, entity, "price", [(0, 250)])
    return task, entity


def wait_delivery(client: Any, task_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    return wait_for(lambda: next((a for a in alerts_of(client, task_id) if a["delivery"]["status"] == status),
                                 None), timeout=timeout)


def test_webhook_signed_per_reference_and_retried_on_500(stack, client):
    secret = client.post("/api/v1/webhook-secret/rotate").json()["secret"]
    assert client.get("/api/v1/webhook-secret").json()["secret"] == secret
    rec = Receiver(statuses=[500, 500])
    try:
        task, _ = fire_one(client, {"type": "webhook", "endpoint": rec.url + "/hook"})
        alert = wait_delivery(client, task["task_id"], "delivered")
        assert [a["status_code"] for a in alert["delivery"]["attempts"]] == [500, 500, 200]
        assert len(rec.requests) == 3
        ids = {r["headers"]["webhook-id"] for r in rec.requests}
        assert ids == {alert["alert_id"]}  # stable across retries
        for r in rec.requests:
            assert reference_verify(secret, r["headers"], r["body"])
            assert not reference_verify("whsec_" + base64.b64encode(b"x" * 32).decode(), r["headers"], r["body"])
        body = json.loads(rec.requests[-1]["body"])
        assert body["type"] == "alert.fired" and body["data"]["alert_id"] == alert["alert_id"]
        assert body["data"]["evidence"]["values"][-1]["value"] == 250
    finally:
        rec.stop()


class SlowThenOk:
    """Sleeps past the client timeout on the first request, answers 200 afterwards."""

    def __init__(self, sleep_s: float) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                outer.hits += 1
                if outer.hits == 1:
                    time.sleep(sleep_s)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_retried_after_timeout(stack, client, worker_settings):
    worker_settings(webhook_timeout_s=0.5)
    srv = SlowThenOk(1.5)
    try:
        task, _ = fire_one(client, {"type": "webhook", "endpoint": srv.url + "/hook"})
        alert = wait_delivery(client, task["task_id"], "delivered")
        first, last = alert["delivery"]["attempts"][0], alert["delivery"]["attempts"][-1]
        assert first["status_code"] is None and "timed out" in first["error"].lower()
        assert last["status_code"] == 200
    finally:
        srv.server.shutdown()


def test_410_disables_the_binding(stack, client, db, workspace):
    rec = Receiver(statuses=[410])
    try:
        task, entity = fire_one(client, {"type": "webhook", "endpoint": rec.url + "/gone"})
        wait_delivery(client, task["task_id"], "disabled")
        send(client, entity, "price", [(1, 100), (2, 300)])  # re-arm and fire again
        settled(db, workspace[0])
        got = wait_for(lambda: (x := alerts_of(client, task["task_id"])) and len(x) == 2
                       and all(a["delivery"]["status"] == "disabled" for a in x) and x)
        assert len(rec.requests) == 1 and "attempts" not in got[1]["delivery"]  # never sent
    finally:
        rec.stop()


def test_private_target_refused_at_delivery_time(stack, client, worker_settings):
    rec = Receiver()
    try:
        worker_settings(allow_private_webhooks=False)  # bound while allowed; refused when delivered
        task, _ = fire_one(client, {"type": "webhook", "endpoint": rec.url + "/hook"})
        alert = wait_delivery(client, task["task_id"], "failed")
        assert "refused target" in alert["delivery"]["attempts"][0]["error"]
        assert rec.requests == []
    finally:
        rec.stop()


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "2130706433", "0177.0.0.1",
                                  "0x7f.0.0.1", "127.1", "localhost", "10.0.0.1", "169.254.169.254"])
def test_private_forms_refused(host):
    from workers.delivery import post

    got = post(f"https://{host}:9/hook", b"{}", "whsec_eA==", "msg_1", allow_private=False, deadline_s=5)
    assert got.kind == "refused" and got.status_code is None and "refused target" in (got.error or "")


class ConnectionCounter:
    """A listener that only counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self.sock.close()


class Redirector:
    """Answers every request with a real redirect to ``location``."""

    def __init__(self, location: str) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                outer.hits += 1
                self.send_response(302)
                self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_redirect_to_loopback_not_followed(stack, client):
    target = ConnectionCounter()
    redirector = Redirector(f"http://127.0.0.1:{target.port}/internal")
    try:
        from workers.delivery import post

        got = post(redirector.url + "/r", b"{}", "whsec_eA==", "m", allow_private=True, deadline_s=5)
        assert (got.kind, got.status_code) == ("retry", 302) and "redirect not followed" in (got.error or "")
        # The whole path too: an alert webhook whose endpoint redirects.
        task, _ = fire_one(client, {"type": "webhook", "endpoint": redirector.url + "/hook"})
        wait_for(lambda: (a := alerts_of(client, task["task_id"])) and a[0]["delivery"].get("attempts"), timeout=15)
        attempt = alerts_of(client, task["task_id"])[0]["delivery"]["attempts"][0]
        assert attempt["status_code"] == 302 and "redirect not followed" in attempt["error"]
        assert redirector.hits >= 2
        assert target.connections == 0
    finally:
        target.stop()
        redirector.server.shutdown()


def test_notification_stored_listed_read_and_published(stack, client, settings, workspace):
    pubsub = redis_lib.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"notifications:{workspace[0]}")
    task, _ = fire_one(client, {"type": "notification"})
    alert = wait_delivery(client, task["task_id"], "delivered")
    nid = alert["delivery"]["notification_id"]
    msg = wait_for(lambda: pubsub.get_message(timeout=0.2), timeout=10)
    assert json.loads(msg["data"])["notification_id"] == nid
    page = client.get("/api/v1/notifications?unread=true").json()
    assert [n["notification_id"] for n in page["items"]] == [nid] and page["total_count"] == 1
    assert page["items"][0]["body"]["alert_id"] == alert["alert_id"]
    assert client.post(f"/api/v1/notifications/{nid}/read").json()["read"] is True
    assert client.get("/api/v1/notifications?unread=true").json()["items"] == []
    assert client.get("/api/v1/notifications").json()["total_count"] == 1
    assert client.post("/api/v1/notifications/ntf_nope/read").status_code == 404
    assert client.get("/api/v1/notifications?unread=maybe").status_code == 400
    pubsub.close()


def test_agent_binding_starts_a_governed_execution(stack, client):
    task, _ = fire_one(client, {"type": "agent", "compliance_policy": "hipaa", "budget_cents": 500,
                                "task": "Summarize the alert."})
    alert = wait_delivery(client, task["task_id"], "delivered")
    e = client.get(f"/api/v1/executions/{alert['delivery']['execution_id']}").json()
    assert e["compliance_policy"] == "hipaa" and e["budget_cents"] == 500
    assert e["task"].startswith("Summarize the alert.") and alert["alert_id"] in e["task"]
    assert "network:http:read" not in e["effective_permissions"]
