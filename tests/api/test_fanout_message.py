"""The fan-out reads an execution event's seq and type off its published text; whatever it reads
agrees with parsing the whole message, for both ways events get serialised."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from api.fanout import Message
from shared.db import dumps_json

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
_events = st.fixed_dictionaries({
    "execution_id": st.text(max_size=30), "seq": st.integers(0, 2**40), "type": st.text(max_size=30),
    "at": st.text(max_size=30), "data": st.dictionaries(st.text(max_size=8), _json, max_size=4)})


@settings(max_examples=300, deadline=None)
@given(event=_events, spaced=st.booleans())
def test_head_agrees_with_the_whole_message(event: dict[str, Any], spaced: bool) -> None:
    text = json.dumps(event) if spaced else dumps_json(event)
    msg = Message.parse("executions:x", text)
    assert msg is not None
    assert (msg.seq, msg.type) == (event["seq"], event["type"])
    assert msg.payload == event


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_other_messages_are_parsed_whole(payload: dict[str, Any]) -> None:
    msg = Message.parse("notifications:w", json.dumps(payload))
    assert msg is not None and msg.payload == payload
    seq = payload.get("seq")
    assert msg.seq == seq and msg.type == payload.get("type")


def test_not_json_objects_are_dropped() -> None:
    assert Message.parse("executions:x", "not json") is None
    assert Message.parse("executions:x", "[1, 2]") is None
