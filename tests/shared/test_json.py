"""The fast JSON helpers give exactly what the standard library gives: same values, same types
(an integer beyond 64 bits stays an exact int), for any JSON text, including escaped lone surrogates."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.db import dumps_json, loads_json

_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(exclude_categories=())),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(value=_values, ascii_only=st.booleans())
def test_loads_json_reads_what_the_standard_library_reads(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _same(loads_json(text), json.loads(text))
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written unescaped is not UTF-8: no bytes form
        return
    assert _same(loads_json(raw), json.loads(raw))


@settings(max_examples=300, deadline=None)
@given(value=_values)
def test_dumps_json_writes_the_same_document(value: Any) -> None:
    assert _same(json.loads(dumps_json(value)), json.loads(json.dumps(value)))
