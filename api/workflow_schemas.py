"""Workflow request and response schemas (marshmallow; requests are allow-lists)."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from api.schemas import StrictInt
from guard import POLICY_NAMES
from shared.config import PROVIDERS

STAGE_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class WorkflowStageRequest(Schema):
    """One stage: an agent execution started when every stage it depends on has succeeded."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(STAGE_NAME, error="Use 1-64 letters, digits, _ or -."))
    task = fields.String(required=True, validate=validate.Length(min=1, max=20000), metadata={
        "description": "The agent task; {{stages.<name>.output}} is replaced by that stage's final output."})
    depends_on = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=list,
                             validate=validate.Length(max=50))
    compliance_policy = fields.String(load_default="default", metadata={"enum": list(POLICY_NAMES)})
    permissions = fields.List(fields.String(validate=validate.Length(min=1, max=100)), validate=validate.Length(max=50),
                              load_default=None, allow_none=True)
    budget_cents = StrictInt(load_default=10000, validate=validate.Range(min=100, max=1_000_000))
    provider = fields.String(validate=validate.OneOf(PROVIDERS), load_default=None, allow_none=True)
    model = fields.String(validate=validate.Length(min=1, max=200), load_default=None, allow_none=True)

    @validates("task")
    def _task_not_blank(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("Task must not be blank.")


class WorkflowCreateRequest(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(validate=validate.Length(min=1, max=200), load_default=None, allow_none=True)
    budget_cents = StrictInt(validate=validate.Range(min=100, max=10_000_000), load_default=None, allow_none=True,
                             metadata={"description": "Caps the sum of the stages' spending."})
    stages = fields.List(fields.Nested(WorkflowStageRequest), required=True, validate=validate.Length(min=1, max=50))


class WorkflowCreated(Schema):
    workflow_id = fields.String()
    status = fields.String()
    websocket_url = fields.String()


class WorkflowStage(Schema):
    name = fields.String()
    depends_on = fields.List(fields.String())
    status = fields.String(metadata={"enum": ["pending", "queued", "running", "succeeded", "blocked", "error",
                                              "cancelled"]})
    execution_id = fields.String(allow_none=True)
    task = fields.String(metadata={"description": "The task as submitted (templates unresolved)."})
    resolved_task = fields.String(allow_none=True, metadata={"description": "The task the execution ran."})
    compliance_policy = fields.String()
    budget_cents = fields.Integer(allow_none=True)
    spent_cents = fields.Float()
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    effective_permissions = fields.List(fields.String())
    output = fields.String(allow_none=True, metadata={
        "description": "The stage's final output (redacted under a policy that redacts, such as hipaa)."})
    labels = fields.List(fields.String(), metadata={
        "description": "Labels its output carries (phi, privileged, financial): given to the stages that use it."})
    error = fields.Dict(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class WorkflowSchema(Schema):
    workflow_id = fields.String()
    name = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["running", "succeeded", "failed", "cancelled"]})
    budget_cents = fields.Integer(allow_none=True)
    spent_cents = fields.Float()
    error = fields.Dict(allow_none=True)
    cancel_requested = fields.Boolean()
    stages = fields.List(fields.Nested(WorkflowStage))
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()


class WorkflowList(Schema):
    items = fields.List(fields.Nested(WorkflowSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    total_count = fields.Integer()


# Nested first, so apispec references them.
SCHEMAS = ("WorkflowStageRequest", "WorkflowCreateRequest", "WorkflowCreated", "WorkflowStage", "WorkflowSchema",
           "WorkflowList")
