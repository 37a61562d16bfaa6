"""The ingest route's hand-checked fast path (``api.signals_schemas.fast_items``) accepts only
what the ``SignalItem`` schema accepts and yields the same rows; anything else falls back to the
schema (and its per-index 422 errors)."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from api.signals_schemas import SignalItem, fast_items

GOOD = {"entity": "AAPL", "metric": "price", "value": 187.2, "ts": "2024-01-02T12:00:00+00:00"}
VARIANTS = [
    {}, {"value": 3}, {"value": 0}, {"value": -1e300}, {"value": True}, {"value": "3"}, {"value": None},
    {"value": float("nan")}, {"value": float("inf")}, {"value": 10**400}, {"ts": "2024-01-02T12:00:00"},
    {"ts": "2024-01-02"}, {"ts": "2024-01-02T12:00:00.123456-05:00"}, {"ts": "yesterday"}, {"ts": 1700000000},
    {"ts": "2024-01-02T12:00:00Z"}, {"ts": "x" * 65}, {"entity": ""}, {"entity": "e" * 200}, {"entity": "e" * 201},
    {"entity": 5}, {"metric": None}, {"metric": "m" * 201}, {"extra": 1},
]


def _schema(items):
    try:
        return [(i["entity"], i["metric"], i["ts"], i["value"]) for i in SignalItem(many=True).load(items)]
    except (ValidationError, OverflowError):
        return None


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_fast_path_agrees_with_the_schema(variant):
    item = {**GOOD, **variant}
    items = [GOOD, item]
    fast, expected = fast_items(items), _schema(items)
    # Taken exactly when the schema accepts (a fast path that declined everything would fail
    # here), with the same rows; declined exactly when the schema has errors to name.
    assert (fast is None) == (expected is None), (fast, expected)
    if fast is not None:
        assert fast == expected
        assert [type(v) for *_, v in fast] == [float, float]


@pytest.mark.parametrize("missing", ["entity", "metric", "value", "ts"])
def test_missing_field_or_not_an_object_falls_back(missing):
    assert fast_items([{k: v for k, v in GOOD.items() if k != missing}]) is None
    assert fast_items([GOOD, [1, 2]]) is None
    assert fast_items([GOOD, "x"]) is None
    assert fast_items([GOOD]) == _schema([GOOD])
