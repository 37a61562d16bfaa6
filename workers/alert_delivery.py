"""Alert delivery (queue ``delivery``), per the action version the alert pinned when it fired.

``workers.delivery.alert(alert_id)`` (enqueued through the outbox with the alert) dispatches:

* ``notification`` — stored (one per alert), then published on Redis ``notifications:<workspace>``
  for ``/ws/notifications``; listed at ``GET /api/v1/notifications``.
* ``agent`` — a governed execution (``executions.insert``: record, first event and outbox row in
  the alert's transaction) under the binding's compliance policy and budget, with the alert as
  context. The alert row lock and its status make a redelivered message start nothing new.
* ``webhook`` — one ``alert_deliveries`` row (``webhook-id`` = the alert id, stable across
  retries), then attempts by ``workers.delivery.alert_webhook`` through the delivery engine
  (workers/delivery.py: claim, POST with a total deadline, record; no lock held across the
  POST). 2xx: delivered. 410: the binding is disabled (its later alerts are recorded, not
  delivered, until the Task is rebound). A refused target: failed. Anything else (3xx, 4xx, 429,
  5xx, network error, deadline): retried with exponential backoff and equal jitter
  (``WARDEN_WEBHOOK_BACKOFF_S`` × 2^(n-1), capped at × 4320), at least the ``Retry-After`` the
  receiver asked for, until × 51840 after the first attempt — with the default 5 s base: 5 s,
  10 s, … capped at 6 h, giving up after 3 days. Every attempt is recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from typing import Any

import redis

from guard import load_policy, resolve_permissions
from shared import outbox
from shared.config import resolve_provider
from shared.ids import new_id
from shared.store import alerts, executions, notifications
from workers import delivery, runtime
from workers.base import task

log = logging.getLogger(__name__)

CAP_FACTOR = 4320  # × base: 6 h with the default 5 s
HORIZON_FACTOR = 51840  # × base: 3 days with the default 5 s
MAX_AGENT_TASK = 20000


def backoff_s(attempt: int, base_s: float) -> float:
    """Delay after failed attempt ``attempt`` (1-based): exponential with equal jitter."""
    delay = min(base_s * 2 ** (attempt - 1), base_s * CAP_FACTOR)
    return delay / 2 + random.uniform(0, delay / 2)


def payload(alert: alerts.Alert) -> bytes:
    body = {"type": "alert.fired", "timestamp": alert.fired_at.isoformat(), "data": alerts.to_json(alert)}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


class AlertWebhook(delivery.Kind):
    table = "alert_deliveries"
    attempts_table = "alert_delivery_attempts"
    task_name = "workers.delivery.alert_webhook"

    def _alert(self, cur: Any, claim: delivery.Claim) -> alerts.Alert:
        alert = alerts.get(cur, claim.row["alert_id"])
        assert alert is not None
        return alert

    def prepare(self, cur: Any, claim: delivery.Claim) -> bytes | tuple[str, str]:
        alert = self._alert(cur, claim)
        if alerts.binding_disabled(cur, alert.action_id, alert.action_version):
            return "disabled", "binding disabled (an earlier delivery got 410)"
        return payload(alert)

    def next_step(self, cur: Any, claim: delivery.Claim, outcome: delivery.Outcome
                  ) -> tuple[str, float | None, str | None]:
        if outcome.kind == "delivered":
            return "delivered", None, None
        if outcome.kind == "gone":
            return "disabled", None, "HTTP 410 Gone: binding disabled"
        if outcome.kind == "refused":
            return "failed", None, outcome.error
        delay = max(backoff_s(claim.attempt, runtime.settings().webhook_backoff_s), outcome.retry_after_s or 0.0)
        cur.execute("SELECT now() + make_interval(secs => %s) > %s AS late", (delay, claim.row["give_up_at"]))
        if cur.fetchone()["late"]:
            return "failed", None, outcome.error
        return "pending", delay, outcome.error

    def finished(self, cur: Any, claim: delivery.Claim, status: str, outcome: delivery.Outcome | None
                 ) -> list[Any]:
        alert = self._alert(cur, claim)
        if outcome is None:  # ended without sending (the binding was disabled meanwhile)
            alerts.set_delivery(cur, alert.id, status, {"error": "binding disabled"})
            return []
        if status == "disabled":
            alerts.disable_binding(cur, alert, outcome.error or "410")
        alerts.set_delivery(cur, alert.id, status, {"attempts": claim.attempt, "last_status_code": outcome.status_code,
                                                    "error": outcome.error})
        return []


ALERT = AlertWebhook()


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
        delivery.schedule(ALERT, webhook_delivery, delivery.attempt(ALERT, webhook_delivery))
        return "webhook"
    outbox.wake(runtime.redis().client)  # the agent execution's outbox row
    return "agent"


@task("workers.delivery.alert", soft_time_limit=60, time_limit=90, idempotent=True)
def alert(alert_id: str) -> str:
    return deliver_alert(alert_id)


@task("workers.delivery.alert_webhook", soft_time_limit=60, time_limit=90, idempotent=True)
def alert_webhook(delivery_id: str) -> None:
    delivery.schedule(ALERT, delivery_id, delivery.attempt(ALERT, delivery_id))


@task("workers.delivery.alert_retry_sweep", soft_time_limit=30, time_limit=45, idempotent=True, expires=30)
def alert_retry_sweep() -> int:
    """(``maintenance`` queue) Publish webhook retries whose time has come, of both kinds: long
    delays, lost countdown messages, attempts whose worker died holding the claim."""
    n = 0
    with runtime.db().transaction() as cur:
        for kind in (ALERT, delivery.EXECUTION):
            due = delivery.due(cur, kind, grace_s=delivery.SWEEP_GRACE_S)
            if due:
                delivery.enqueue(cur, kind, due)
                n += len(due)
    if n:
        outbox.wake(runtime.redis().client)
    return n
