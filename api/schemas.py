"""Request and response schemas (marshmallow). Requests are allow-lists (``unknown=RAISE``);
the OpenAPI document is generated from these same classes."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from guard import POLICY_NAMES
from shared.config import PROVIDERS


class StrictInt(fields.Integer):
    """An integer that refuses bools, floats and numeric strings."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return int(value)


class StrictStr(fields.String):
    pass


class AgentTaskRequest(Schema):
    """TaskRequest (seed 000): submit a governed agent execution."""

    class Meta:
        unknown = RAISE

    task = fields.String(required=True, validate=validate.Length(min=1, max=20000),
                         metadata={"description": "Natural-language description of what the agent should do."})
    compliance_policy = fields.String(
        load_default="default",
        metadata={"enum": list(POLICY_NAMES),
                  "description": "Active policy preset. \"legal\" is an alias for \"legal_privilege\"."})
    budget_cents = StrictInt(load_default=10000, validate=validate.Range(min=100, max=1_000_000),
                             metadata={"description": "Per-task budget. Default 10000; range [100, 1000000]."})
    permissions = fields.List(fields.String(validate=validate.Length(min=1, max=100)),
                              validate=validate.Length(max=50), load_default=None, allow_none=True,
                              metadata={"description": "Requested capabilities, intersected with the ceiling."})
    provider = fields.String(validate=validate.OneOf(PROVIDERS), load_default=None, allow_none=True,
                             metadata={"description": "LLM provider override (local = offline rule-based planner)."})
    model = fields.String(validate=validate.Length(min=1, max=200), load_default=None, allow_none=True)
    webhook_url = fields.Url(schemes={"http", "https"}, require_tld=False, load_default=None, allow_none=True,
                             validate=validate.Length(max=2048))

    @validates("task")
    def _task_not_blank(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("Task must not be blank.")


class TaskResponse(Schema):
    execution_id = fields.String(required=True)
    status = fields.String(required=True)
    websocket_url = fields.String(required=True)


class ErrorDetail(Schema):
    message = fields.String(required=True)
    code = fields.String()
    errors = fields.Dict()
    denied = fields.List(fields.Dict())


class ErrorResponse(Schema):
    detail = fields.Nested(ErrorDetail, required=True)


class ExecutionSchema(Schema):
    execution_id = fields.String()
    task = fields.String()
    status = fields.String(metadata={"enum": ["queued", "running", "succeeded", "blocked", "error", "cancelled"]})
    compliance_policy = fields.String()
    policy_version = fields.String()
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    budget_cents = fields.Integer()
    spent_cents = fields.Float()
    requested_permissions = fields.List(fields.String(), allow_none=True)
    effective_permissions = fields.List(fields.String())
    denied_permissions = fields.List(fields.Dict())
    webhook_url = fields.String(allow_none=True)
    result = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)
    usage = fields.Dict()
    counts = fields.Dict()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()


class ExecutionList(Schema):
    items = fields.List(fields.Nested(ExecutionSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    total_count = fields.Integer()


class EventSchema(Schema):
    execution_id = fields.String()
    seq = fields.Integer()
    type = fields.String()
    at = fields.DateTime()
    data = fields.Dict()


class EventList(Schema):
    items = fields.List(fields.Nested(EventSchema))
    has_more = fields.Boolean()
    next_after = fields.Integer(allow_none=True)
