"""Agent task intake: validate, resolve permissions, persist execution + outbox in one
transaction, answer. Never publishes to the broker (the outbox relay does, after commit)."""

from __future__ import annotations

import os
from typing import Any

from flask import request

from api import schemas
from api.auth import key_id
from api.dispatch import GRACE_S
from api.idempotency import create_once
from api.schemas import AgentTaskRequest
from api.services import services
from guard import UnknownPolicy, load_policy, resolve_permissions
from shared.config import PROVIDERS, Settings, resolve_provider
from shared.errors import BadRequest, WardenError
from shared.ids import new_id
from shared.netsafe import check_url_literal
from shared.store import executions

_schema = AgentTaskRequest()


_BASES: dict[tuple[object, ...], str] = {}
_MAX_BASES = 256


def _base_url() -> str:
    """``ws(s)://host`` for this request: WARDEN_PUBLIC_URL, else the request's own host URL.
    Remembered per (public URL, scheme, Host): building ``request.host_url`` costs more than the
    rest of the URL (the Host header is client-supplied, hence the bound)."""
    environ = request.environ
    public = services().settings.public_url
    key = (public, environ.get("wsgi.url_scheme"), environ.get("HTTP_HOST"), environ.get("SERVER_NAME"),
           environ.get("SERVER_PORT"))
    base = _BASES.get(key)
    if base is None:
        base = (public or request.host_url).rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://"):]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://"):]
        if len(_BASES) >= _MAX_BASES:
            _BASES.clear()
        _BASES[key] = base
    return base


def websocket_url(kind: str, resource_id: str, token: str) -> str:
    path = f"/ws/{kind}/{resource_id}" if resource_id else f"/ws/{kind}"
    return f"{_base_url()}{path}?token={token}"


_FAST_FIELDS = frozenset({"task", "compliance_policy", "budget_cents", "permissions", "provider", "model"})


def _load(body: dict[str, Any]) -> dict[str, Any]:
    """``AgentTaskRequest().load(body)``, with a hand-checked path for the plainly valid common
    case (no webhook_url): the same result without marshmallow's per-field machinery. Anything
    the fast path is unsure of goes to the schema, which owns every error message."""
    data = _fast_load(body)
    return data if data is not None else _schema.load(body)


def _fast_load(body: dict[str, Any]) -> dict[str, Any] | None:
    if not body.keys() <= _FAST_FIELDS:
        return None
    task = body.get("task")
    if type(task) is not str or not 0 < len(task) <= schemas.TASK_MAX_CHARS or not task.strip():
        return None
    policy = body.get("compliance_policy", "default")
    budget = body.get("budget_cents", schemas.BUDGET_DEFAULT)
    permissions = body.get("permissions")
    provider = body.get("provider")
    model = body.get("model")
    if type(policy) is not str or type(budget) is not int or not schemas.BUDGET_MIN <= budget <= schemas.BUDGET_MAX:
        return None
    if permissions is not None:
        if type(permissions) is not list or len(permissions) > schemas.PERMISSIONS_MAX:
            return None
        for p in permissions:
            if type(p) is not str or not 0 < len(p) <= schemas.PERMISSION_MAX_CHARS:
                return None
        permissions = list(permissions)
    if provider is not None and (type(provider) is not str or provider not in PROVIDERS):
        return None
    if model is not None and (type(model) is not str or not 0 < len(model) <= schemas.MODEL_MAX_CHARS):
        return None
    return {"task": task, "compliance_policy": policy, "budget_cents": budget, "permissions": permissions,
            "provider": provider, "model": model, "webhook_url": None}


# The variable each vendor provider needs; `local` needs nothing.
_PROVIDER_KEYS = {"openai": ("openai_api_key", "OPENAI_API_KEY"),
                  "anthropic": ("anthropic_api_key", "ANTHROPIC_API_KEY")}


def require_configured(settings: Settings, provider: str, *, stage: str | None = None) -> None:
    """400 ``provider_not_configured`` naming the provider when this server has no key for it:
    refused at submission rather than accepted and ended ``error`` by the worker."""
    need = _PROVIDER_KEYS.get(provider)
    # The worker's client falls back to the variable itself when Settings has no key (the vendor
    # SDK reads it), so the same two places are looked at here.
    if need is None or getattr(settings, need[0]) or os.environ.get(need[1]):
        return
    where = f"Stage {stage!r}: " if stage else ""
    extra = {"provider": provider} | ({"stage": stage} if stage else {})
    raise BadRequest(f"{where}Provider {provider!r} is not configured on this server ({need[1]} is not set); "
                     "omit 'provider' to use the server default, or choose 'local'",
                     code="provider_not_configured", **extra)


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
    data = _load(body)
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
    require_configured(svc.settings, provider)

    execution_id = new_id("exec")
    token = svc.tokens.issue(workspace_id, execution_id, key_id())
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
        svc.execution_writer.submit(new)  # committed (with concurrent requests' rows) on return
        return 201, payload, headers

    own = svc.dispatcher.takes(1)
    outbox_ids: list[int] = []

    def create(cur: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        outbox_ids.append(executions.insert(cur, new, publish_after_s=GRACE_S if own else None))
        return 201, payload, headers

    response, created = create_once(svc, workspace_id, idem_key, "/api/v1/tasks", body, create)
    if created:
        svc.dispatcher.announce([(outbox_ids[-1], execution_id)], own=own)
    return response


class _NoPermissions(WardenError):
    """403 with the seed's exact body: message and denied, nothing else."""

    status = 403
    code = "no_effective_permissions"

    def __init__(self, policy_name: str, denied: list[dict[str, str]]) -> None:
        super().__init__(f"No effective permissions after applying '{policy_name}' compliance policy")
        self.exact_detail = {"message": self.message, "denied": denied}
