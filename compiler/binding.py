"""Stage 6: bind the delivery to an action. A Task cannot exist without a valid binding.

Delivery shapes (the API has already checked the schema; this stage checks meaning):

* ``{"type": "notification"}``
* ``{"type": "webhook", "endpoint": url}`` — the injected ``endpoint_check(url)`` returns a
  refusal reason or None. The default, ``check_endpoint``, looks only at the scheme and literal
  addresses (no DNS here: resolution and address checks happen again at every delivery).
* ``{"type": "agent", "task"?: str, "compliance_policy"?: str, "budget_cents"?: int}`` — the
  policy must be one the guardrails list (aliases such as ``legal`` are resolved).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from compiler.errors import ACTION_BINDING_FAILED, CompileError
from compiler.guardrails import Guardrails

EndpointCheck = Callable[[str], "str | None"]
_MAX_URL = 2048
_MAX_AGENT_TASK = 4000


def check_endpoint(url: str, *, allow_private: bool = False) -> str | None:
    """Why ``url`` is refused as a webhook target, or None. Scheme and literal addresses only."""
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        return "endpoint must be a non-empty URL of at most 2048 characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"endpoint is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"endpoint scheme must be http or https, not {parts.scheme or 'missing'!r}"
    if not host:
        return "endpoint has no host"
    if parts.username or parts.password:
        return "endpoint must not carry credentials"
    if allow_private:
        return None
    name = host.rstrip(".")
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return "endpoint resolves to a loopback host"
    address = _literal(host)
    if address is None:
        return None  # a name: checked when it is resolved at delivery time
    if not _is_public(address):
        return f"endpoint address {address} is not a public address"
    return None


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a literal host denotes, in any form ``inet_aton`` accepts, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _inet_aton(host)


_PART = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The forms C ``inet_aton`` (and so a resolver) accepts: one to four parts, each decimal,
    octal (``0177``) or hex (``0x7f``), the last filling the remaining bytes (``2130706433``,
    ``127.1``). Written out because the compiler does no socket calls."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.match(p) for p in parts):
        return None
    values = [int(p, 16) if p[:2].lower() == "0x" else int(p, 8) if p.startswith("0") else int(p)
              for p in parts]
    last_bits = 8 * (5 - len(values))
    if any(v > 255 for v in values[:-1]) or values[-1] >= 1 << last_bits:
        return None
    n = values[-1]
    for i, v in enumerate(values[:-1]):
        n |= v << (24 - 8 * i)
    return ipaddress.IPv4Address(n)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Only globally routable unicast addresses; IPv6 forms that embed an IPv4 address (mapped,
    6to4, NAT64, compatible) are judged by it. The API and workers use ``shared.netsafe``, the same
    rule with resolution; this copy keeps the compiler free of the shared package."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in ipaddress.IPv6Network("64:ff9b:1::/48"):
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in ipaddress.IPv6Network("64:ff9b::/96")
                                 or (ip in ipaddress.IPv6Network("::/96") and int(ip) > 1)):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_public(embedded)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip in ipaddress.IPv4Network("192.0.0.0/24"))


def _fail(message: str, trace: list[dict[str, Any]]) -> CompileError:
    return CompileError(ACTION_BINDING_FAILED, message, trace)


def bind_action(
    delivery: Any,
    g: Guardrails,
    condition_description: str,
    endpoint_check: EndpointCheck | None,
    trace: list[dict[str, Any]],
) -> tuple[dict[str, Any], str]:
    """The action binding and the rule that produced it; CompileError(action_binding_failed) if none."""
    if not isinstance(delivery, Mapping):
        raise _fail("delivery must be an object with a 'type'", trace)
    kind = delivery.get("type")
    if kind == "notification":
        return {"type": "notification"}, "delivery.notification"
    if kind == "webhook":
        endpoint = delivery.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise _fail("webhook delivery needs an 'endpoint' URL", trace)
        check = endpoint_check or check_endpoint
        try:
            refusal = check(endpoint)
        except Exception as exc:  # an injected checker failing is a refusal, not a crash
            refusal = f"endpoint check failed: {type(exc).__name__}"
        if refusal:
            raise _fail(f"webhook endpoint refused: {refusal}", trace)
        return {"type": "webhook", "endpoint": endpoint}, "delivery.webhook + endpoint_check"
    if kind == "agent":
        agent = g.agent
        policy = delivery.get("compliance_policy", agent["default_policy"])
        if not isinstance(policy, str):
            raise _fail("agent compliance_policy must be a string", trace)
        policy = (agent.get("aliases") or {}).get(policy, policy)
        if policy not in agent["compliance_policies"]:
            raise _fail(
                f"unknown compliance policy {policy!r}; known: {', '.join(agent['compliance_policies'])}", trace
            )
        limits = agent["budget_cents"]
        budget = delivery.get("budget_cents", limits["default"])
        if not isinstance(budget, int) or isinstance(budget, bool) or not limits["min"] <= budget <= limits["max"]:
            raise _fail(f"agent budget_cents must be an integer in [{limits['min']}, {limits['max']}]", trace)
        task = delivery.get("task")
        if task is None:
            task = (
                f"A monitoring alert fired. Condition: {condition_description} "
                "Investigate what happened and write a short summary."
            )
        if not isinstance(task, str) or not task.strip() or len(task) > _MAX_AGENT_TASK:
            raise _fail(f"agent task must be a non-empty string of at most {_MAX_AGENT_TASK} characters", trace)
        return (
            {"type": "agent", "task": task, "compliance_policy": policy, "budget_cents": budget},
            "delivery.agent + guardrails.agent",
        )
    raise _fail(f"unknown delivery type {kind!r}; expected notification, webhook or agent", trace)
