"""Schemas for signals, alerts, notifications, the webhook secret and replay. Requests are
allow-lists (``unknown=RAISE``); the OpenAPI document is generated from these classes."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

MAX_SIGNALS = 1000
_NAME = validate.Length(min=1, max=200)


class StrictNumber(fields.Float):
    """A finite JSON number: refuses bools, strings, NaN and infinities."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("Not a valid number.")
        value = float(value)
        if not math.isfinite(value):
            raise ValidationError("Must be a finite number.")
        return value


def parse_utc(value: str) -> datetime:
    """An ISO 8601 timestamp as UTC (no offset means UTC). Raises ValueError.

    Converted here because Python takes offsets up to ±24 h and PostgreSQL only up to ±15:59;
    an instant that leaves Python's years 1–9999 in UTC is refused too."""
    ts = datetime.fromisoformat(value)
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None


class Timestamp(fields.Field):
    """ISO 8601; a value without a UTC offset is taken as UTC."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or len(value) > 64:
            raise ValidationError("Not a valid ISO 8601 timestamp.")
        try:
            return parse_utc(value)
        except ValueError:
            raise ValidationError("Not a valid ISO 8601 timestamp.") from None


class SignalItem(Schema):
    class Meta:
        unknown = RAISE

    entity = fields.String(required=True, validate=_NAME, metadata={"example": "AAPL"})
    metric = fields.String(required=True, validate=_NAME, metadata={"example": "price"})
    value = StrictNumber(required=True, metadata={"example": 187.2})
    ts = Timestamp(required=True, metadata={"type": "string", "format": "date-time",
                                            "description": "ISO 8601; no offset means UTC."})


_ITEM_KEYS = frozenset(("entity", "metric", "value", "ts"))


def fast_items(raw: list[Any]) -> list[tuple[str, str, datetime, float]] | None:
    """The batch as ``(entity, metric, ts, value)`` rows when every item is plainly valid, checked
    by hand (a tenth of ``SignalItem(many=True).load``'s cost at 1,000 items); None at the first
    item that is not, so the caller runs the schema for its exact per-index errors. Accepts only
    what ``SignalItem`` accepts and yields the same values."""
    rows = []
    for item in raw:
        if type(item) is not dict or item.keys() != _ITEM_KEYS:
            return None
        entity, metric, value, ts = item["entity"], item["metric"], item["value"], item["ts"]
        if (type(entity) is not str or type(metric) is not str or not 0 < len(entity) <= 200
                or not 0 < len(metric) <= 200 or type(value) not in (int, float) or type(ts) is not str
                or len(ts) > 64):
            return None
        try:
            value = float(value)
            when = parse_utc(ts)
        except (ValueError, OverflowError):  # OverflowError: an int too large for a float
            return None
        if not math.isfinite(value):
            return None
        rows.append((entity, metric, when, value))
    return rows


class SignalBatchRequest(Schema):
    """Up to 1000 signals. One bad item refuses the whole batch (422 naming its index)."""

    class Meta:
        unknown = RAISE

    # Raw items: the view checks them itself (api/routes/signals.py) and names the bad index.
    signals = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1, max=MAX_SIGNALS))


# Merged into the OpenAPI document's components (apispec documents a Raw item as anything).
OPENAPI_RULES: dict[str, dict[str, Any]] = {
    "SignalBatchRequest": {"properties": {"signals": {"items": {"$ref": "#/components/schemas/SignalItem"}}}},
}


class SignalBatchAccepted(Schema):
    accepted = fields.Integer(metadata={"description": "Signals in the batch (all stored or already stored)."})
    stored = fields.Integer(metadata={"description": "New rows; duplicates of (entity, metric, ts) are ignored."})
    duplicates = fields.Integer()


class DeliveryState(Schema):
    type = fields.String(metadata={"enum": ["webhook", "notification", "agent"]})
    status = fields.String(metadata={"enum": ["pending", "delivered", "failed", "disabled"]})
    attempts = fields.List(fields.Dict(), metadata={"description": "Webhook attempts, oldest first."})


class AlertSchema(Schema):
    alert_id = fields.String()
    task_id = fields.String()
    condition_id = fields.String()
    condition_version = fields.String()
    action_id = fields.String()
    action_version = fields.String()
    entity = fields.String()
    metric = fields.String()
    evaluated_at = fields.DateTime(metadata={"description": "Signal time (beat time for absence)."})
    fired_at = fields.DateTime()
    evidence = fields.Dict(metadata={"description": "values, window, params, strategy, condition version."})
    delivery = fields.Nested(DeliveryState)


class AlertList(Schema):
    items = fields.List(fields.Nested(AlertSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    total_count = fields.Integer()


class NotificationSchema(Schema):
    notification_id = fields.String()
    alert_id = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    title = fields.String()
    body = fields.Dict()
    read = fields.Boolean()
    read_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class NotificationList(Schema):
    items = fields.List(fields.Nested(NotificationSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    total_count = fields.Integer()


class WebhookSecret(Schema):
    secret = fields.String(metadata={"description": "whsec_<base64>: HMAC key for webhook-signature."})
    algorithm = fields.String()


class ReplayRequest(Schema):
    class Meta:
        unknown = RAISE

    version = fields.String(load_default=None, validate=validate.Length(min=1, max=20),
                            metadata={"description": "Condition version; default the latest."})
    entity_scope = fields.String(load_default=None, validate=_NAME,
                                 metadata={"description": "Default: the entity scope the condition was compiled for."})
    start = Timestamp(required=True, data_key="from", metadata={"type": "string", "format": "date-time"})
    end = Timestamp(required=True, data_key="to", metadata={"type": "string", "format": "date-time"})


class ReplayResult(Schema):
    condition_id = fields.String()
    condition_version = fields.String()
    entity_scope = fields.String()
    metric = fields.String()
    strategy = fields.String()
    evaluated_points = fields.Integer()
    fire_count = fields.Integer()
    fired = fields.List(fields.Dict(), metadata={"description": "[{at, evidence}] in time order."})


SCHEMAS = ("SignalItem", "SignalBatchRequest", "SignalBatchAccepted", "AlertSchema", "AlertList",
           "NotificationSchema", "NotificationList", "WebhookSecret", "ReplayRequest", "ReplayResult")
