"""The OpenAI provider reads the chat-completion answer itself (``read_completion``): what it
takes from a well-formed answer, and what it refuses as ``provider_bad_response``."""

from __future__ import annotations

import json

import pytest

from workers.providers.base import ProviderError
from workers.providers.openai_provider import read_completion


def answer(message, *, usage=None, finish="stop", **extra):
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}], **extra}
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def test_text_tool_calls_usage_and_finish_reason():
    done = read_completion(answer(
        {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "read_document", "arguments": '{"document_id": "d1"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "list_documents", "arguments": ""}},
        ]}, usage={"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333,
                   "prompt_tokens_details": {"cached_tokens": 0}}, finish="tool_calls",
        system_fingerprint="fp", service_tier="default"))
    assert done.text is None and done.stop_reason == "tool_calls"
    assert done.tool_calls == [{"id": "call_1", "name": "read_document", "arguments": {"document_id": "d1"}},
                               {"id": "call_2", "name": "list_documents", "arguments": {}}]
    assert (done.input_tokens, done.output_tokens) == (321, 12)


def test_a_plain_answer_without_usage():
    done = read_completion(answer({"role": "assistant", "content": "All done."}))
    assert done.text == "All done." and done.tool_calls == [] and done.stop_reason == "stop"
    assert (done.input_tokens, done.output_tokens) == (0, 0)


def test_malformed_arguments_are_kept_for_the_guard_to_refuse():
    done = read_completion(answer({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "send_email", "arguments": "{not json"}}]}))
    assert done.tool_calls[0]["arguments"] == {"_raw": "{not json"}


def test_tool_calls_of_another_kind_are_not_ours_to_run():
    done = read_completion(answer({"role": "assistant", "content": "x", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "grammar", "input": "…"}}]}))
    assert done.tool_calls == []


@pytest.mark.parametrize(("body", "said"), [
    (b"", "other than JSON"),
    (b"<html>502 Bad Gateway</html>", "other than JSON"),
    (b"[1, 2]", "no choices"),
    (b'{"object": "chat.completion"}', "no choices"),
    (b'{"choices": []}', "no choices"),
    (b'{"choices": [{"index": 0, "finish_reason": "stop"}]}', "no message"),
    (answer({"role": "assistant", "content": ["a", "b"]}), "not text"),
    (answer({"role": "assistant", "content": None, "tool_calls": {"id": "c"}}), "not a list"),
    (answer({"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "x"}}]}),
     "without an id"),
    (answer({"role": "assistant", "content": "x"}, usage={"prompt_tokens": "12", "completion_tokens": 1}),
     "token count"),
    (answer({"role": "assistant", "content": "x"}, usage={"prompt_tokens": -1, "completion_tokens": 1}),
     "token count"),
])
def test_what_is_not_a_chat_completion_is_refused(body, said):
    with pytest.raises(ProviderError) as err:
        read_completion(body)
    assert err.value.code == "provider_bad_response" and not err.value.transient
    assert said in err.value.message
