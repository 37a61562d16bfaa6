"""Agent task intake: validate, resolve permissions, persist execution + outbox in one
transaction, answer. Never publishes to the broker (the outbox relay does, after commit)."""

from __future__ import annotations

from typing import Any

from flask import request

from api.schemas import AgentTaskRequest
from api.services import services
from guard import UnknownPolicy, load_policy, resolve_permissions
from shared import outbox
from shared.config import resolve_provider
from shared.errors import BadRequest, WardenError
from shared.ids import new_id
from shared.netsafe import check_url_literal
from shared.store import executions, idempotency
from shared.store.idempotency import StoredResponse

_schema = AgentTaskRequest()

MAX_IDEMPOTENCY_KEY = 255


class _KeyRaced(Exception):
    """Another request claimed the same Idempotency-Key first."""


def websocket_url(kind: str, resource_id: str, token: str) -> str:
    base = services().settings.public_url or request.host_url
    base = base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    path = f"/ws/{kind}/{resource_id}" if resource_id else f"/ws/{kind}"
    return f"{base}{path}?token={token}"


def _policy_name(body: dict[str, Any]) -> None:
    name = body.get("compliance_policy", "default")
    if isinstance(name, str):
        try:
            load_policy(name)
        except UnknownPolicy as exc:
            raise BadRequest(str(exc), code="invalid_compliance_policy") from None


def submit_execution(workspace_id: str, body: dict[str, Any], idem_key: str | None
                     ) -> tuple[int, dict[str, Any], dict[str, str]]:
    svc = services()
    _policy_name(body)  # an unknown policy is a 400, before field validation's 422
    data = _schema.load(body)
    policy = load_policy(data["compliance_policy"])
    resolution = resolve_permissions(policy, data["permissions"])
    if not resolution.effective:
        raise _NoPermissions(policy.name, resolution.denied)
    if data["webhook_url"] is not None:
        reason = check_url_literal(data["webhook_url"], allow_private=svc.settings.allow_private_webhooks)
        if reason:
            from marshmallow import ValidationError
            raise ValidationError({"webhook_url": [f"Refused: {reason}."]})
    provider, model = resolve_provider(svc.settings, data["provider"], data["model"])

    execution_id = new_id("exec")
    token = svc.tokens.issue(workspace_id, execution_id)
    payload = {"execution_id": execution_id, "status": "queued",
               "websocket_url": websocket_url("executions", execution_id, token)}
    headers = {"Location": f"/api/v1/executions/{execution_id}"}
    new = executions.NewExecution(
        id=execution_id, workspace_id=workspace_id, task=data["task"], compliance_policy=policy.name,
        policy_version=policy.version, provider=provider, model=model, budget_cents=data["budget_cents"],
        requested_permissions=data["permissions"], effective_permissions=resolution.effective,
        denied_permissions=resolution.denied, webhook_url=data["webhook_url"],
        queued_event={"compliance_policy": policy.name, "policy_version": policy.version,
                      "effective_permissions": resolution.effective, "denied_permissions": resolution.denied,
                      "budget_cents": data["budget_cents"], "provider": provider, "model": model},
    )
    if idem_key is None:
        with svc.db.autocommit() as cur:  # the insert is one statement: atomic on its own
            executions.insert(cur, new)
        outbox.wake(svc.redis.client)
        return 201, payload, headers

    if not idem_key or len(idem_key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters", code="invalid_idempotency_key")
    ttl = svc.settings.idempotency_ttl_s
    req_hash = idempotency.request_hash("POST", "/api/v1/tasks", body)
    try:
        with svc.db.transaction() as cur:
            stored = idempotency.lookup(cur, workspace_id, idem_key, req_hash, ttl)
            if stored is not None:
                return stored.status_code, stored.body, stored.headers
            if not idempotency.claim(cur, workspace_id, idem_key, req_hash, StoredResponse(201, payload, headers),
                                     ttl):
                raise _KeyRaced
            executions.insert(cur, new)
        outbox.wake(svc.redis.client)
    except _KeyRaced:
        with svc.db.transaction() as cur:
            stored = idempotency.lookup(cur, workspace_id, idem_key, req_hash, ttl)
        if stored is None:  # the other request rolled back; the client may simply retry
            raise WardenError("A request with this Idempotency-Key is in progress; retry", code="idempotency_conflict",
                              status=409) from None
        return stored.status_code, stored.body, stored.headers
    return 201, payload, headers


class _NoPermissions(WardenError):
    """403 with the seed's exact body: message and denied, nothing else."""

    status = 403
    code = "no_effective_permissions"

    def __init__(self, policy_name: str, denied: list[dict[str, str]]) -> None:
        super().__init__(f"No effective permissions after applying '{policy_name}' compliance policy")
        self.exact_detail = {"message": self.message, "denied": denied}
