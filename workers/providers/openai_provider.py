"""OpenAI chat completions with tool calling, through the official ``openai`` SDK.

The key comes from ``OPENAI_API_KEY`` (Settings) and the endpoint from ``OPENAI_BASE_URL`` (the
SDK reads it when no base URL is passed), so any compatible server (vLLM, Ollama, a test
double) works. The SDK's own retries are off: the executor retries typed transient errors.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai

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
    """Calls go through the SDK's client (its HTTP stack, authentication, status errors), sent
    with its public ``client.post`` and ``cast_to=httpx2.Response``, the SDK README's "undocumented
    requests" form, rather than ``chat.completions.create``:

    * ``create`` first walks every argument against the request's TypedDicts
      (``openai._utils._transform``), which for a run's messages and tool schemas was a fifth of the
      executions worker's CPU with a thousand runs in flight (``bench_inflight``), and changes
      nothing in what we send: the body is the documented one.
    * Building the SDK's ``ChatCompletion`` from the answer (``construct_type``, a walk of pydantic
      models by type introspection) took 167 µs a call, for the five fields a run reads; read
      here with orjson from the documented chat-completion object, 7 µs. An answer that is not
      one is ``provider_bad_response`` (never a guess).

    A non-2xx answer still raises the SDK's typed ``APIStatusError`` before any of this (the SDK
    checks the status whatever ``cast_to`` is). Written against openai 3.63."""

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
            resp = self.client.post("/chat/completions", cast_to=httpx2.Response, body={
                "model": model, "messages": _wire_messages(system, messages), "max_tokens": MAX_OUTPUT_TOKENS,
                **kwargs})
            body = resp.content  # read in full by the SDK (not a stream)
        except openai.APIStatusError as exc:
            code, transient = classify_status(exc.status_code)
            raise ProviderError(code, f"OpenAI returned {exc.status_code}: {exc.message}"[:500],
                                transient=transient, retry_after=retry_after(exc.response.headers)) from None
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise ProviderError("provider_unavailable", f"OpenAI unreachable: {exc}"[:500], transient=True) from None
        except openai.OpenAIError as exc:
            raise ProviderError("provider_bad_response", f"OpenAI: {exc}"[:500], transient=False) from None
        return read_completion(body)


def read_completion(body: bytes) -> Completion:
    """A :class:`Completion` from a chat-completion answer's body (the first choice): its text,
    its function tool calls, the token usage and the finish reason. ProviderError
    ``provider_bad_response`` when the body is not a chat completion."""
    data = json_answer(body, "OpenAI")
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ProviderError("provider_bad_response", "OpenAI returned no choices", transient=False)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ProviderError("provider_bad_response", "OpenAI's first choice has no message", transient=False)
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise ProviderError("provider_bad_response", "OpenAI's message content is not text", transient=False)
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise ProviderError("provider_bad_response", "OpenAI's tool_calls is not a list", transient=False)
    calls = []
    for c in raw_calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict):  # another kind of tool call (not a function): not ours to run
            continue
        if not isinstance(c.get("id"), str) or not isinstance(fn.get("name"), str):
            raise ProviderError("provider_bad_response", "OpenAI returned a tool call without an id or a name",
                                transient=False)
        calls.append({"id": c["id"], "name": fn["name"], "arguments": parse_arguments(fn.get("arguments"))})
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    finish = choice.get("finish_reason")
    return Completion(text=text, tool_calls=calls,
                      input_tokens=token_count(usage.get("prompt_tokens"), "OpenAI", optional=True),
                      output_tokens=token_count(usage.get("completion_tokens"), "OpenAI", optional=True),
                      stop_reason=finish if isinstance(finish, str) else None)

