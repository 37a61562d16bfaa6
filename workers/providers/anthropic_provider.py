"""Anthropic messages with tool use, through the official ``anthropic`` SDK.

Key from ``ANTHROPIC_API_KEY`` (Settings), endpoint from ``ANTHROPIC_BASE_URL`` (read by the
SDK when no base URL is passed). SDK retries off: the executor retries typed transient errors.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2

from workers.providers.base import (
    MAX_OUTPUT_TOKENS,
    Completion,
    ProviderError,
    classify_status,
    json_answer,
    parse_arguments,
    retry_after,
    shared_tls_context,
    token_count,
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
    """Calls go through the SDK's client (its HTTP stack, authentication, ``anthropic-version``
    header, status errors), sent with its public ``client.post`` and ``cast_to=httpx2.Response``
    (the SDK's generic request method, as for OpenAI: see ``openai_provider``) rather than
    ``messages.create``, which first walks every argument against the request's TypedDicts and
    then builds the SDK's ``Message`` models from the answer. The body sent is the documented
    Messages API request; the answer is read with orjson from the documented message object
    (:func:`read_message`), and one that is not a message is ``provider_bad_response``. Measured
    against the fake model, one call of a run's size: 1.15–1.20 ms of CPU through
    ``messages.create``, 0.76–0.88 ms this way. A non-2xx answer still raises the SDK's typed
    ``APIStatusError`` (the SDK checks the status whatever ``cast_to`` is). Written against
    anthropic 2.17."""

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
            resp = self.client.post("/v1/messages", cast_to=httpx2.Response, body={
                "model": model, "max_tokens": MAX_OUTPUT_TOKENS, "system": system,
                "messages": _wire_messages(messages), **kwargs})
            body = resp.content  # read in full by the SDK (not a stream)
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
        return read_message(body)


def read_message(body: bytes) -> Completion:
    """A :class:`Completion` from a Messages API answer's body: its text blocks joined, its
    ``tool_use`` blocks, the token usage and the stop reason. ProviderError
    ``provider_bad_response`` when the body is not a message."""
    data = json_answer(body, "Anthropic")
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise ProviderError("provider_bad_response", "Anthropic returned no content", transient=False)
    texts: list[str] = []
    calls = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise ProviderError("provider_bad_response", "Anthropic's text block has no text", transient=False)
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise ProviderError("provider_bad_response", "Anthropic returned a tool use without an id or a name",
                                    transient=False)
            calls.append({"id": block["id"], "name": block["name"], "arguments": parse_arguments(block.get("input"))})
        elif not isinstance(kind, str):
            raise ProviderError("provider_bad_response", "Anthropic returned a content block without a type",
                                transient=False)
        # other kinds (thinking, server tool results, …) carry nothing a run acts on
    usage = data.get("usage")
    if not isinstance(usage, dict):
        raise ProviderError("provider_bad_response", "Anthropic returned no usage", transient=False)
    stop = data.get("stop_reason")
    return Completion(text="\n".join(texts) if texts else None, tool_calls=calls,
                      input_tokens=token_count(usage.get("input_tokens"), "Anthropic"),
                      output_tokens=token_count(usage.get("output_tokens"), "Anthropic"),
                      stop_reason=stop if isinstance(stop, str) else None)

