"""Anthropic messages with tool use, through the official ``anthropic`` SDK.

Key from ``ANTHROPIC_API_KEY`` (Settings), endpoint from ``ANTHROPIC_BASE_URL`` (read by the
SDK when no base URL is passed). SDK retries off: the executor retries typed transient errors.
"""

from __future__ import annotations

from typing import Any

import anthropic

from workers.providers.base import (
    MAX_OUTPUT_TOKENS,
    Completion,
    ProviderError,
    classify_status,
    parse_arguments,
    retry_after,
    shared_tls_context,
)


def _wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.get("content"):
                blocks.append({"type": "text", "text": m["content"]})
            for c in m.get("tool_calls") or []:
                blocks.append({"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]})
            out.append({"role": "assistant", "content": blocks or [{"type": "text", "text": ""}]})
        elif m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"],
                     "is_error": bool(m.get("is_error"))}
            # Consecutive tool results go back in one user turn, as the API requires.
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        else:
            out.append({"role": "user", "content": m["content"]})
    return out


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, api_key: str | None, timeout_s: float = 60.0) -> None:
        try:
            # One TLS context for every client of the process (building one costs tens of ms).
            http = anthropic.DefaultHttpxClient(verify=shared_tls_context())
            self.client = anthropic.Anthropic(api_key=api_key, max_retries=0, timeout=timeout_s, http_client=http)
        except anthropic.AnthropicError as exc:
            raise ProviderError("provider_not_configured", f"Anthropic is not configured: {exc}",
                                transient=False) from None

    def complete(self, *, model: str, system: str, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]]) -> Completion:
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                               for t in tools]
        try:
            resp = self.client.messages.create(model=model, max_tokens=MAX_OUTPUT_TOKENS, system=system,
                                               messages=_wire_messages(messages),  # type: ignore[arg-type]
                                               **kwargs)
        except anthropic.APIStatusError as exc:
            code, transient = classify_status(exc.status_code)
            if exc.status_code == 529:
                code, transient = "provider_unavailable", True
            raise ProviderError(code, f"Anthropic returned {exc.status_code}: {exc.message}"[:500],
                                transient=transient, retry_after=retry_after(exc.response.headers)) from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError("provider_unavailable", f"Anthropic unreachable: {exc}"[:500], transient=True) from None
        except anthropic.AnthropicError as exc:
            raise ProviderError("provider_bad_response", f"Anthropic: {exc}"[:500], transient=False) from None
        texts, calls = [], []
        for block in resp.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                calls.append({"id": block.id, "name": block.name, "arguments": parse_arguments(block.input)})
        return Completion(text="\n".join(texts) if texts else None, tool_calls=calls,
                          input_tokens=resp.usage.input_tokens, output_tokens=resp.usage.output_tokens,
                          stop_reason=resp.stop_reason)
