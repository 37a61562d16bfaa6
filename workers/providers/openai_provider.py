"""OpenAI chat completions with tool calling, through the official ``openai`` SDK.

The key comes from ``OPENAI_API_KEY`` (Settings) and the endpoint from ``OPENAI_BASE_URL`` (the
SDK reads it when no base URL is passed), so any compatible server (vLLM, Ollama, a test
double) works. The SDK's own retries are off: the executor retries typed transient errors.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from workers.providers.base import (
    MAX_OUTPUT_TOKENS,
    Completion,
    ProviderError,
    classify_status,
    parse_arguments,
    retry_after,
    shared_tls_context,
)


def _wire_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in messages:
        if m["role"] == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.get("content")}
            if m.get("tool_calls"):
                msg["tool_calls"] = [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                    for c in m["tool_calls"]]
            out.append(msg)
        elif m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        else:
            out.append({"role": "user", "content": m["content"]})
    return out


class OpenAIProvider:
    """Calls go through the SDK's client (its HTTP stack, authentication, errors and response
    types), sent with its public ``client.post`` (the README's "undocumented requests") rather
    than ``chat.completions.create``: ``create`` first walks every argument against the request's
    TypedDicts (``openai._utils._transform``), which for a run's messages and tool schemas was a
    fifth of the executions worker's CPU with a thousand runs in flight (``bench_inflight``),
    and changes nothing in what we send. The body is the documented one; the answer is parsed
    into the SDK's ``ChatCompletion`` as ``create`` would. Written against openai 3.63."""

    name = "openai"

    def __init__(self, api_key: str | None, timeout_s: float = 60.0) -> None:
        try:
            # One TLS context for every client of the process (building one costs tens of ms).
            http = openai.DefaultHttpxClient(verify=shared_tls_context())
            self.client = openai.OpenAI(api_key=api_key, max_retries=0, timeout=timeout_s, http_client=http)
        except openai.OpenAIError as exc:
            raise ProviderError("provider_not_configured", f"OpenAI is not configured: {exc}",
                                transient=False) from None

    def complete(self, *, model: str, system: str, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]]) -> Completion:
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                                 "parameters": t["parameters"]}} for t in tools]
        try:
            resp = self.client.post("/chat/completions", cast_to=ChatCompletion, body={
                "model": model, "messages": _wire_messages(system, messages), "max_tokens": MAX_OUTPUT_TOKENS,
                **kwargs})
        except openai.APIStatusError as exc:
            code, transient = classify_status(exc.status_code)
            raise ProviderError(code, f"OpenAI returned {exc.status_code}: {exc.message}"[:500],
                                transient=transient, retry_after=retry_after(exc.response.headers)) from None
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise ProviderError("provider_unavailable", f"OpenAI unreachable: {exc}"[:500], transient=True) from None
        except openai.OpenAIError as exc:
            raise ProviderError("provider_bad_response", f"OpenAI: {exc}"[:500], transient=False) from None
        if not resp.choices:
            raise ProviderError("provider_bad_response", "OpenAI returned no choices", transient=False)
        choice = resp.choices[0]
        calls = [{"id": c.id, "name": c.function.name, "arguments": parse_arguments(c.function.arguments)}
                 for c in (choice.message.tool_calls or []) if getattr(c, "function", None) is not None]
        usage = resp.usage
        return Completion(text=choice.message.content, tool_calls=calls,
                          input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0,
                          stop_reason=choice.finish_reason)
