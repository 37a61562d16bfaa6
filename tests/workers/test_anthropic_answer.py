"""The Anthropic provider reads the Messages API answer itself (``read_message``): what it takes
from a well-formed message, and what it refuses as ``provider_bad_response``."""

from __future__ import annotations

import json

import pytest

from workers.providers.anthropic_provider import read_message
from workers.providers.base import ProviderError


def answer(content, *, usage=None, stop="end_turn", **extra):
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": usage if usage is not None else {"input_tokens": 10, "output_tokens": 2}, **extra}
    return json.dumps(body).encode()


def test_text_tool_uses_usage_and_stop_reason():
    done = read_message(answer([
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "read_document", "input": {"document_id": "d1"}},
        {"type": "tool_use", "id": "toolu_2", "name": "list_documents", "input": {}},
    ], usage={"input_tokens": 321, "output_tokens": 12, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0, "service_tier": "standard"}, stop="tool_use"))
    assert done.text == "Let me look." and done.stop_reason == "tool_use"
    assert done.tool_calls == [{"id": "toolu_1", "name": "read_document", "arguments": {"document_id": "d1"}},
                               {"id": "toolu_2", "name": "list_documents", "arguments": {}}]
    assert (done.input_tokens, done.output_tokens) == (321, 12)


def test_text_blocks_are_joined_and_an_empty_content_is_no_text():
    assert read_message(answer([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])).text == "a\nb"
    done = read_message(answer([], stop=None))
    assert done.text is None and done.tool_calls == [] and done.stop_reason is None


def test_blocks_of_other_kinds_carry_nothing_to_act_on():
    done = read_message(answer([{"type": "thinking", "thinking": "…", "signature": "s"},
                                {"type": "text", "text": "Done."}]))
    assert done.text == "Done." and done.tool_calls == []


def test_arguments_that_are_not_an_object_are_kept_for_the_guard_to_refuse():
    done = read_message(answer([{"type": "tool_use", "id": "t", "name": "send_email", "input": "{not json"}]))
    assert done.tool_calls[0]["arguments"] == {"_raw": "{not json"}


@pytest.mark.parametrize(("body", "said"), [
    (b"", "other than JSON"),
    (b"<html>502 Bad Gateway</html>", "other than JSON"),
    (b"[1, 2]", "no content"),
    (b'{"type": "message"}', "no content"),
    (answer("just text"), "no content"),
    (answer([{"text": "x"}]), "without a type"),
    (answer(["x"]), "without a type"),
    (answer([{"type": "text"}]), "has no text"),
    (answer([{"type": "tool_use", "name": "x", "input": {}}]), "without an id"),
    (answer([{"type": "tool_use", "id": "t", "input": {}}]), "without an id"),
    (json.dumps({"type": "message", "content": []}).encode(), "no usage"),
    (answer([], usage={"input_tokens": "12", "output_tokens": 1}), "token count"),
    (answer([], usage={"input_tokens": 1}), "token count"),
    (answer([], usage={"input_tokens": -1, "output_tokens": 1}), "token count"),
])
def test_what_is_not_a_message_is_refused(body, said):
    with pytest.raises(ProviderError) as err:
        read_message(body)
    assert err.value.code == "provider_bad_response" and not err.value.transient
    assert said in err.value.message
