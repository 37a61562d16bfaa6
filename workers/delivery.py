"""Webhook deliveries (queue ``delivery``): the final execution POSTed to its ``webhook_url``.

Signed per Standard Webhooks (shared/webhooks.py) with the workspace secret; ``webhook-id``
is fixed per delivery so a receiver can de-duplicate retries. Each attempt is recorded. A
non-2xx answer, a network error or a refused target is retried with exponential backoff
(``shared.webhooks.backoff_s``, finite); after the last the delivery is ``failed``.
The SSRF check (resolve, refuse private targets unless allowed) runs at every attempt.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from guard import display
from shared import safehttp, webhooks
from shared.store import executions
from shared.views import execution_json
from workers import runtime
from workers.base import task

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class DeliveryFailed(Exception):
    pass


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


def _attempt(delivery: dict[str, Any], body: bytes, secret: str) -> tuple[int | None, str | None]:
    try:
        resp = safehttp.request("POST", delivery["url"], body=body,
                                headers=webhooks.headers(secret, delivery["webhook_id"], body),
                                allow_private=runtime.settings().allow_private_webhooks, timeout=TIMEOUT_S,
                                max_bytes=4096)
    except safehttp.UnsafeTarget as exc:
        return None, f"refused target: {exc}"
    except safehttp.HttpError as exc:
        return None, str(exc)
    return resp.status, None if 200 <= resp.status < 300 else f"HTTP {resp.status}"


@task("workers.delivery.execution_webhook", soft_time_limit=60, time_limit=90, idempotent=True,
      bind=True, max_retries=webhooks.MAX_RETRIES)
def execution_webhook(self: Any, delivery_id: str) -> str:
    db = runtime.db()
    with db.transaction() as cur:
        # SKIP LOCKED: a duplicate message while another attempt is in flight leaves it alone.
        cur.execute("SELECT d.*, w.webhook_secret FROM webhook_deliveries d JOIN workspaces w ON w.id = d.workspace_id"
                    " WHERE d.id = %s FOR UPDATE OF d SKIP LOCKED", (delivery_id,))
        d = cur.fetchone()
        if d is None or d["status"] != "pending":
            return "nothing_to_do"
        e = executions.get_any(cur, d["execution_id"])
        body = json.dumps(shown_execution(e), separators=(",", ":"), sort_keys=True).encode()
        attempt = d["attempt_count"] + 1
        started = time.monotonic()
        status_code, error = _attempt(d, body, d["webhook_secret"])
        ms = int((time.monotonic() - started) * 1000)
        cur.execute("INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (delivery_id, attempt, status_code, error, ms))
        final = error is None or attempt > webhooks.MAX_RETRIES
        new_status = "delivered" if error is None else ("failed" if final else "pending")
        cur.execute("UPDATE webhook_deliveries SET attempt_count = %s, status = %s, last_error = %s,"
                    " delivered_at = CASE WHEN %s THEN now() END, updated_at = now() WHERE id = %s",
                    (attempt, new_status, error, error is None, delivery_id))
    if new_status == "pending":
        raise self.retry(countdown=webhooks.backoff_s(attempt, runtime.settings().webhook_backoff_s),
                         exc=DeliveryFailed(error))
    log.info("webhook %s: %s after %d attempt(s)", delivery_id, new_status, attempt)
    return new_status
