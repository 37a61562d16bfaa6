"""The webhook delivery engine (queue ``delivery``), shared by execution callbacks (the final
execution POSTed to its ``webhook_url``, below) and alert webhooks (workers/alert_delivery.py).

A delivery is one logical message: one row (``webhook_deliveries`` or ``alert_deliveries``) whose
``webhook-id`` is stable across retries, signed per Standard Webhooks (shared/webhooks.py) with the
workspace secret. One attempt:

1. **Claim** (one short transaction): the row, if ``pending`` and due and not claimed, gets a
   claim token and a lease (the attempt's deadline plus a margin); commit. A duplicate message, or
   a second worker, finds it claimed and leaves it alone.
2. **POST**, with no transaction open and no row locked, through ``shared.safehttp`` (the SSRF
   check at every attempt, redirects never followed) with a **total deadline**
   (``WARDEN_WEBHOOK_TIMEOUT_S``: connect, send and the whole response), so a receiver that hangs
   or drips one byte a second holds a worker thread for the deadline and no longer.
3. **Record** (one short transaction): the attempt and the next state, written only while the
   claim is still ours (``WHERE claim_token = …``): a worker that lost its lease records nothing.

Outcomes, the same for both kinds: 2xx delivered; 410 Gone stops retrying (an execution callback
ends ``failed``; an alert's binding is disabled); a refused target ends ``failed``; anything else
(3xx, 4xx, 429, 5xx, network error, deadline) is retried after the kind's backoff, and never
sooner than the ``Retry-After`` the receiver asked for. A retry within ``COUNTDOWN_MAX_S`` is
published with a countdown; a later one (or one whose message was lost, or whose worker died
mid-attempt and left a stale claim) is published by ``workers.delivery.alert_retry_sweep`` on the
``maintenance`` queue once ``next_attempt_at`` has passed. Execution callbacks make 1 +
``webhooks.MAX_RETRIES`` attempts (backoff ``WARDEN_WEBHOOK_BACKOFF_S`` × 4^(n-1), at most an
hour); after the last failed one the delivery is ``failed`` and the workspace gets a notification
(``GET /api/v1/notifications``, ``/ws/notifications``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import current_app

from guard import display
from shared import safehttp, webhooks
from shared.db import Json
from shared.ids import new_id
from shared.store import executions, notifications
from shared.views import execution_json
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)

COUNTDOWN_MAX_S = 60.0  # retries sooner than this are published with a countdown; later ones swept
SWEEP_GRACE_S = 10.0
LEASE_MARGIN_S = 30.0  # a claim outlives the attempt's deadline by this much
RETRY_AFTER_MAX_S = 3600.0  # an execution callback honours Retry-After up to an hour


@dataclass(frozen=True)
class Outcome:
    kind: str  # delivered | gone | refused | retry
    status_code: int | None
    error: str | None
    retry_after_s: float | None = None


WITHHELD = "[WITHHELD: privileged]"


def shown_execution(e: executions.Execution) -> dict[str, Any]:
    """The final execution as its webhook shows it: under a policy that redacts (hipaa), or for a
    run carrying phi, the task, the output and the error's words are redacted like its events; for
    a run carrying privileged content they are withheld (the record keeps them)."""
    body = execution_json(e)
    if "privileged" in e.labels:
        # Privileged content stays inside the workspace, and a webhook leaves it: the words of a run
        # that read privileged content are withheld (the record and its events keep them).
        body["task"] = WITHHELD
        if isinstance(body["result"], dict) and body["result"].get("output") is not None:
            body["result"] = {**body["result"], "output": WITHHELD}
    if display.redacts(e.compliance_policy, e.labels):
        names = tuple(e.record_names)
        body["task"] = display.redact_text(body["task"], names)
        body["result"] = display.shown(body["result"], e.compliance_policy, names, keep=("reason", "labels"),
                                       labels=e.labels)
        body["error"] = display.shown(body["error"], e.compliance_policy, names, keep=("code", "violations"),
                                      labels=e.labels)
    return body


def post(url: str, body: bytes, secret: str, webhook_id: str, *, allow_private: bool,
         deadline_s: float) -> Outcome:
    """One signed POST, over by ``deadline_s`` whatever the receiver does."""
    try:
        resp = safehttp.request("POST", url, body=body, headers=webhooks.headers(secret, webhook_id, body),
                                allow_private=allow_private, timeout=deadline_s, deadline_s=deadline_s,
                                max_bytes=4096, follow_redirects=False)
    except safehttp.UnsafeTarget as exc:
        return Outcome("refused", None, f"refused target: {exc}")
    except safehttp.HttpError as exc:
        return Outcome("retry", None, str(exc)[:500])
    if 200 <= resp.status < 300:
        return Outcome("delivered", resp.status, None)
    if resp.status == 410:
        return Outcome("gone", resp.status, "HTTP 410 Gone")
    error = f"HTTP {resp.status}" + (" (redirect not followed)" if 300 <= resp.status < 400 else "")
    return Outcome("retry", resp.status, error, safehttp.retry_after_s(resp.headers.get("retry-after")))


@dataclass
class Claim:
    row: dict[str, Any]
    secret: str
    token: str
    attempt: int


class Kind:
    """What differs between execution callbacks and alert webhooks."""

    table = ""
    attempts_table = ""
    task_name = ""

    def prepare(self, cur: Any, claim: Claim) -> bytes | tuple[str, str]:
        """The body to POST, or (final status, reason) to end the delivery without sending."""
        raise NotImplementedError

    def next_step(self, cur: Any, claim: Claim, outcome: Outcome) -> tuple[str, float | None, str | None]:
        """(new status, delay before the next attempt, error to record) after ``outcome``."""
        raise NotImplementedError

    def finished(self, cur: Any, claim: Claim, status: str, outcome: Outcome | None) -> list[Any]:
        """Side effects of a final status, in the recording transaction; returns what to publish
        after commit."""
        return []


def _claim(kind: Kind, delivery_id: str, lease_s: float) -> tuple[Claim, bytes | tuple[str, str]] | None:
    token = secrets.token_hex(8)
    with runtime.db().transaction() as cur:
        # An UPDATE, not SELECT … FOR UPDATE held open: the row is locked only until this commit.
        cur.execute(f"UPDATE {kind.table} d SET claim_token = %s,"  # noqa: S608 - table names are constants
                    " claimed_until = now() + make_interval(secs => %s)"
                    " FROM workspaces w WHERE d.id = %s AND w.id = d.workspace_id AND d.status = 'pending'"
                    " AND d.next_attempt_at <= now() + interval '1 second'"
                    " AND (d.claimed_until IS NULL OR d.claimed_until < now())"
                    " RETURNING d.*, w.webhook_secret", (token, lease_s, delivery_id))
        row = cur.fetchone()
        if row is None:
            return None
        secret = row.pop("webhook_secret")
        claim = Claim(row=row, secret=secret, token=token, attempt=row["attempt_count"] + 1)
        return claim, kind.prepare(cur, claim)


def _record(kind: Kind, claim: Claim, code: int | None, ms: int, outcome: Outcome | None,
            ended: tuple[str, str] | None = None) -> tuple[str, float | None] | None:
    """Record the attempt and the delivery's next state, only while the claim is still ours:
    (new status, delay before the next attempt), or None when the claim was lost. ``ended``: the
    delivery ends without an attempt being sent (status, reason)."""
    published: list[Any] = []
    with runtime.db().transaction() as cur:
        if ended is not None:
            (status, error), delay = ended, None
        else:
            assert outcome is not None
            status, delay, error = kind.next_step(cur, claim, outcome)
        cur.execute(f"UPDATE {kind.table} SET attempt_count = %s, status = %s, last_error = %s,"  # noqa: S608
                    " next_attempt_at = now() + make_interval(secs => %s),"
                    " delivered_at = CASE WHEN %s = 'delivered' THEN now() END, updated_at = now(),"
                    " claim_token = NULL, claimed_until = NULL WHERE id = %s AND claim_token = %s",
                    (claim.attempt, status, error, delay or 0.0, status, claim.row["id"], claim.token))
        if cur.rowcount != 1:
            return None  # the lease ran out and another attempt took over: its outcome counts
        cur.execute(f"INSERT INTO {kind.attempts_table} (delivery_id, attempt, status_code, error, duration_ms)"  # noqa: S608
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (claim.row["id"], claim.attempt, code, error, ms))
        if status != "pending":
            published = kind.finished(cur, claim, status, outcome)
    for workspace_id, item in published:
        with contextlib.suppress(redis.RedisError):  # stored already; the list endpoint has it
            runtime.redis().client.publish(notifications.channel_for(workspace_id),
                                           json.dumps(item, separators=(",", ":")))
    log.info("%s %s attempt %d: %s", kind.table, claim.row["id"], claim.attempt, error or status)
    return status, delay


def attempt(kind: Kind, delivery_id: str) -> float | None:
    """Make the delivery's next attempt if it is due and unclaimed; the delay before the one
    after it, if any."""
    s = runtime.settings()
    got = _claim(kind, delivery_id, s.webhook_timeout_s + LEASE_MARGIN_S)
    if got is None:
        return None  # not due, finished, or another worker is attempting it right now
    claim, prepared = got
    if isinstance(prepared, tuple):
        _record(kind, claim, None, 0, None, ended=prepared)
        return None
    started = time.monotonic()
    outcome = post(claim.row["url"], prepared, claim.secret, claim.row["webhook_id"],
                   allow_private=s.allow_private_webhooks, deadline_s=s.webhook_timeout_s)
    ms = int((time.monotonic() - started) * 1000)
    done = _record(kind, claim, outcome.status_code, ms, outcome)
    if done is None:
        log.warning("%s %s attempt %d: claim lost, outcome not recorded", kind.table, delivery_id, claim.attempt)
        return None
    status, delay = done
    return delay if status == "pending" else None


def schedule(kind: Kind, delivery_id: str, delay: float | None) -> None:
    if delay is None or delay > COUNTDOWN_MAX_S:
        return  # the sweep publishes it when next_attempt_at comes
    with contextlib.suppress(Exception):  # broker trouble: the sweep still has it
        current_app.send_task(kind.task_name, args=[delivery_id], countdown=delay)


# ---- execution callbacks --------------------------------------------------------------------

class ExecutionWebhook(Kind):
    table = "webhook_deliveries"
    attempts_table = "webhook_attempts"
    task_name = "workers.delivery.execution_webhook"

    def prepare(self, cur: Any, claim: Claim) -> bytes | tuple[str, str]:
        e = executions.get_any(cur, claim.row["execution_id"])
        return json.dumps(shown_execution(e), separators=(",", ":"), sort_keys=True).encode()

    def next_step(self, cur: Any, claim: Claim, outcome: Outcome) -> tuple[str, float | None, str | None]:
        if outcome.kind == "delivered":
            return "delivered", None, None
        if outcome.kind == "gone":
            return "failed", None, "HTTP 410 Gone: not retried"
        if outcome.kind == "refused" or claim.attempt > webhooks.MAX_RETRIES:
            return "failed", None, outcome.error
        delay = webhooks.backoff_s(claim.attempt, runtime.settings().webhook_backoff_s)
        return "pending", max(delay, min(outcome.retry_after_s or 0.0, RETRY_AFTER_MAX_S)), outcome.error

    def finished(self, cur: Any, claim: Claim, status: str, outcome: Outcome | None) -> list[Any]:
        if status != "failed":
            return []
        d = claim.row
        body = {"type": "webhook.failed", "delivery_id": d["id"], "execution_id": d["execution_id"],
                "url": d["url"], "webhook_id": d["webhook_id"], "attempts": claim.attempt,
                "last_status_code": outcome.status_code if outcome else None,
                "last_error": (outcome.error if outcome else None)}
        title = f"Webhook for {d['execution_id']} failed after {claim.attempt} attempt(s)"
        cur.execute("INSERT INTO notifications (id, workspace_id, title, body) VALUES (%s, %s, %s, %s)"
                    " RETURNING id, workspace_id, alert_id, task_id, title, body, read_at, created_at",
                    (new_id("ntf"), d["workspace_id"], title, Json(body)))
        return [(d["workspace_id"], notifications.to_json(cur.fetchone()))]


EXECUTION = ExecutionWebhook()


@task("workers.delivery.execution_webhook", soft_time_limit=60, time_limit=90, idempotent=True)
def execution_webhook(delivery_id: str) -> None:
    schedule(EXECUTION, delivery_id, attempt(EXECUTION, delivery_id))


def due(cur: Any, kind: Kind, *, grace_s: float, limit: int = 500) -> list[str]:
    """Pending deliveries whose retry time passed more than ``grace_s`` ago and that nobody
    holds (a stale claim, its worker gone, counts as nobody)."""
    cur.execute(f"SELECT id FROM {kind.table} WHERE status = 'pending'"  # noqa: S608
                " AND next_attempt_at <= now() - make_interval(secs => %s)"
                " AND (claimed_until IS NULL OR claimed_until < now())"
                " ORDER BY next_attempt_at LIMIT %s", (grace_s, limit))
    return [r["id"] for r in cur.fetchall()]


def enqueue(cur: Any, kind: Kind, delivery_ids: list[str]) -> None:
    cur.execute("INSERT INTO outbox (task_name, args, queue)"
                " SELECT %s, jsonb_build_array(i), 'delivery' FROM unnest(%s::text[]) AS i",
                (kind.task_name, delivery_ids))
