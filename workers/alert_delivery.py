"""Alert delivery (queue ``delivery``), per the action version the alert pinned when it fired.

``workers.delivery.alert(alert_id)`` (enqueued through the outbox with the alert) dispatches:

* ``notification`` — stored (one per alert), then published on Redis ``notifications:<workspace>``
  for ``/ws/notifications``; listed at ``GET /api/v1/notifications``.
* ``agent`` — a governed execution (``executions.insert``: record, first event and outbox row in
  the alert's transaction) under the binding's compliance policy and budget, with the alert as
  context. The alert row lock and its status make a redelivered message start nothing new.
* ``webhook`` — one ``alert_deliveries`` row (``webhook-id`` = the alert id, stable across
  retries), then attempts by ``workers.delivery.alert_webhook``: JSON POST signed per Standard
  Webhooks v1 with the workspace secret (``shared.webhooks``), 15 s timeout, through
  ``shared.safehttp`` (host resolved and checked against the SSRF rules at every attempt;
  redirects never followed). 2xx: delivered. 410: the binding is disabled (its later alerts are
  recorded, not delivered, until the Task is rebound). A refused target: failed. Anything else
  (3xx, 4xx, 429, 5xx, network error, timeout): retried with exponential backoff and equal jitter
  (``WARDEN_WEBHOOK_BACKOFF_S`` × 2^(n-1), capped at × 4320), at least the ``Retry-After`` the
  receiver asked for, until × 51840 after the first attempt — with the default 5 s base: 5 s,
  10 s, … capped at 6 h, giving up after 3 days. Every attempt is recorded. Short retries are
  published with a countdown; long ones are picked up by the beat job
  ``workers.delivery.alert_retry_sweep`` from ``next_attempt_at`` (so no broker holds a 6 h ETA).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any

import redis

from guard import load_policy, resolve_permissions
from shared import outbox, safehttp, webhooks
from shared.config import resolve_provider
from shared.ids import new_id
from shared.store import alerts, executions, notifications
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0
CAP_FACTOR = 4320  # × base: 6 h with the default 5 s
HORIZON_FACTOR = 51840  # × base: 3 days with the default 5 s
COUNTDOWN_MAX_S = 60.0  # retries sooner than this are published with a countdown; later ones swept
SWEEP_GRACE_S = 10.0
MAX_AGENT_TASK = 20000


def backoff_s(attempt: int, base_s: float) -> float:
    """Delay after failed attempt ``attempt`` (1-based): exponential with equal jitter."""
    delay = min(base_s * 2 ** (attempt - 1), base_s * CAP_FACTOR)
    return delay / 2 + random.uniform(0, delay / 2)


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def payload(alert: alerts.Alert) -> bytes:
    body = {"type": "alert.fired", "timestamp": alert.fired_at.isoformat(), "data": alerts.to_json(alert)}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def post(url: str, body: bytes, secret: str, webhook_id: str, *, allow_private: bool
         ) -> tuple[str, int | None, str | None, float | None]:
    """One signed POST: (outcome, status code, error, Retry-After seconds). Outcome is
    ``delivered`` | ``gone`` | ``refused`` | ``retry``."""
    try:
        resp = safehttp.request("POST", url, body=body, headers=webhooks.headers(secret, webhook_id, body),
                                allow_private=allow_private, timeout=TIMEOUT_S, max_bytes=4096,
                                follow_redirects=False)
    except safehttp.UnsafeTarget as exc:
        return "refused", None, f"refused target: {exc}", None
    except safehttp.HttpError as exc:
        return "retry", None, str(exc)[:500], None
    if 200 <= resp.status < 300:
        return "delivered", resp.status, None, None
    if resp.status == 410:
        return "gone", resp.status, "HTTP 410 Gone: binding disabled", None
    error = f"HTTP {resp.status}" + (" (redirect not followed)" if 300 <= resp.status < 400 else "")
    return "retry", resp.status, error, retry_after_s(resp.headers.get("retry-after"))


def attempt_webhook(delivery_id: str) -> float | None:
    """Make the next attempt if it is due; returns the delay before the next one, if any."""
    s = runtime.settings()
    with runtime.db().transaction() as cur:
        got = alerts.lock_delivery(cur, delivery_id)
        if got is None:
            return None  # another worker is attempting it right now
        d, secret, due = got
        if d.status != "pending" or not due:
            return None
        alert = alerts.get(cur, d.alert_id)
        assert alert is not None
        n = d.attempt_count + 1
        if alerts.binding_disabled(cur, alert.action_id, alert.action_version):
            alerts.record_attempt(cur, d, n, None, "binding disabled (an earlier delivery got 410)", 0,
                                  new_status="disabled", retry_in_s=None)
            alerts.set_delivery(cur, alert.id, "disabled", {"error": "binding disabled"})
            return None
        started = time.monotonic()
        outcome, code, error, retry_after = post(d.url, payload(alert), secret, d.webhook_id,
                                                 allow_private=s.allow_private_webhooks)
        ms = int((time.monotonic() - started) * 1000)
        delay = None
        if outcome == "retry":
            delay = max(backoff_s(n, s.webhook_backoff_s), retry_after or 0.0)
            cur.execute("SELECT now() + make_interval(secs => %s) > %s AS late", (delay, d.give_up_at))
            if cur.fetchone()["late"]:
                outcome, delay = "failed", None
        status = {"delivered": "delivered", "gone": "disabled", "refused": "failed", "failed": "failed"}.get(
            outcome, "pending")
        alerts.record_attempt(cur, d, n, code, error, ms, new_status=status, retry_in_s=delay)
        if outcome == "gone":
            alerts.disable_binding(cur, alert, error or "410")
        if status != "pending":
            alerts.set_delivery(cur, alert.id, status, {"attempts": n, "last_status_code": code,
                                                        "error": error})
    log.info("alert webhook %s attempt %d: %s", delivery_id, n, error or "delivered")
    return delay


def _schedule(delivery_id: str, delay: float | None) -> None:
    if delay is None or delay > COUNTDOWN_MAX_S:
        return  # the sweep publishes it when next_attempt_at comes
    with contextlib.suppress(Exception):  # broker trouble: the sweep still has it
        alert_webhook.apply_async(args=[delivery_id], countdown=delay)


def _agent_execution(cur: Any, alert: alerts.Alert, binding: dict[str, Any]) -> str:
    policy = load_policy(binding.get("compliance_policy") or "default")
    resolution = resolve_permissions(policy, None)
    provider, model = resolve_provider(runtime.settings(), None, None)
    context = json.dumps(alerts.to_json(alert), separators=(",", ":"), sort_keys=True)
    text = f"{binding.get('task') or 'A monitoring alert fired.'}\n\nAlert (JSON):\n{context}"[:MAX_AGENT_TASK]
    execution_id = new_id("exec")
    budget = int(binding.get("budget_cents") or 10000)
    executions.insert(cur, executions.NewExecution(
        id=execution_id, workspace_id=alert.workspace_id, task=text, compliance_policy=policy.name,
        policy_version=policy.version, provider=provider, model=model, budget_cents=budget,
        requested_permissions=None, effective_permissions=resolution.effective,
        denied_permissions=resolution.denied, webhook_url=None,
        queued_event={"compliance_policy": policy.name, "policy_version": policy.version,
                      "effective_permissions": resolution.effective, "denied_permissions": resolution.denied,
                      "budget_cents": budget, "provider": provider, "model": model,
                      "source": {"alert_id": alert.id, "task_id": alert.task_id}}))
    return execution_id


def deliver_alert(alert_id: str) -> str:
    """Dispatch one alert per its binding; returns what happened."""
    s = runtime.settings()
    published: dict[str, Any] | None = None
    webhook_delivery: str | None = None
    with runtime.db().transaction() as cur:
        alert = alerts.get(cur, alert_id, lock=True)
        if alert is None or alert.delivery_status != "pending" or alert.delivery_detail.get("delivery_id"):
            webhook_delivery = alert.delivery_detail.get("delivery_id") if alert else None
            if webhook_delivery is None:
                return "nothing_to_do"
        elif alerts.binding_disabled(cur, alert.action_id, alert.action_version):
            alerts.set_delivery(cur, alert.id, "disabled", {"error": "binding disabled (an endpoint answered 410)"})
            return "disabled"
        else:
            binding = alerts.binding(cur, alert) or {}
            kind = binding.get("type")
            if kind == "notification":
                published = notifications.insert_for_alert(
                    cur, alert.workspace_id, alert.id, alert.task_id,
                    f"{alert.metric} alert for {alert.entity}", alerts.to_json(alert))
                alerts.set_delivery(cur, alert.id, "delivered", {"notification_id": published["notification_id"]})
            elif kind == "agent":
                execution_id = _agent_execution(cur, alert, binding)
                alerts.set_delivery(cur, alert.id, "delivered", {"execution_id": execution_id})
            elif kind == "webhook":
                webhook_delivery = alerts.create_delivery(cur, alert, binding["endpoint"],
                                                          s.webhook_backoff_s * HORIZON_FACTOR)
                alerts.set_delivery(cur, alert.id, "pending", {"delivery_id": webhook_delivery})
            else:
                alerts.set_delivery(cur, alert.id, "failed", {"error": f"unknown binding type {kind!r}"})
                return "failed"
    if published is not None:
        with contextlib.suppress(redis.RedisError):  # stored already; the list endpoint has it
            runtime.redis().client.publish(notifications.channel_for(alert.workspace_id),
                                           json.dumps(published, separators=(",", ":")))
        return "notification"
    if webhook_delivery is not None:
        _schedule(webhook_delivery, attempt_webhook(webhook_delivery))
        return "webhook"
    outbox.wake(runtime.redis().client)  # the agent execution's outbox row
    return "agent"


@task("workers.delivery.alert", soft_time_limit=60, time_limit=90, idempotent=True)
def alert(alert_id: str) -> str:
    return deliver_alert(alert_id)


@task("workers.delivery.alert_webhook", soft_time_limit=60, time_limit=90, idempotent=True)
def alert_webhook(delivery_id: str) -> None:
    _schedule(delivery_id, attempt_webhook(delivery_id))


@task("workers.delivery.alert_retry_sweep", soft_time_limit=30, time_limit=45, idempotent=True, expires=30)
def alert_retry_sweep() -> int:
    """Publish webhook retries whose time has come (long delays, lost countdown messages)."""
    with runtime.db().transaction() as cur:
        due = alerts.due_deliveries(cur, grace_s=SWEEP_GRACE_S)
        if due:
            alerts.enqueue_webhooks(cur, due)
    if due:
        outbox.wake(runtime.redis().client)
    return len(due)
