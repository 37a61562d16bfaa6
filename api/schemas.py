"""Request and response schemas (marshmallow). Requests are allow-lists (``unknown=RAISE``);
the OpenAPI document is generated from these same classes."""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates

from guard import POLICY_NAMES
from shared.config import PROVIDERS


class StrictInt(fields.Integer):
    """An integer that refuses bools, floats and numeric strings."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return int(value)


# TaskRequest limits (seed 000), shared with the intake's fast path (api/intake.py).
TASK_MAX_CHARS = 20000
BUDGET_DEFAULT, BUDGET_MIN, BUDGET_MAX = 10000, 100, 1_000_000
PERMISSIONS_MAX, PERMISSION_MAX_CHARS = 50, 100
MODEL_MAX_CHARS = 200


class AgentTaskRequest(Schema):
    """TaskRequest (seed 000): submit a governed agent execution."""

    class Meta:
        unknown = RAISE

    task = fields.String(required=True, validate=validate.Length(min=1, max=TASK_MAX_CHARS),
                         metadata={"description": "Natural-language description of what the agent should do."})
    compliance_policy = fields.String(
        load_default="default",
        metadata={"enum": list(POLICY_NAMES),
                  "description": "Active policy preset. \"legal\" is an alias for \"legal_privilege\"."})
    budget_cents = StrictInt(load_default=BUDGET_DEFAULT, validate=validate.Range(min=BUDGET_MIN, max=BUDGET_MAX),
                             metadata={"description": "Per-task budget. Default 10000; range [100, 1000000]."})
    permissions = fields.List(fields.String(validate=validate.Length(min=1, max=PERMISSION_MAX_CHARS)),
                              validate=validate.Length(max=PERMISSIONS_MAX), load_default=None, allow_none=True,
                              metadata={"description": "Requested capabilities, intersected with the ceiling."})
    provider = fields.String(validate=validate.OneOf(PROVIDERS), load_default=None, allow_none=True,
                             metadata={"description": "LLM provider override (local = offline rule-based planner)."})
    model = fields.String(validate=validate.Length(min=1, max=MODEL_MAX_CHARS), load_default=None, allow_none=True)
    webhook_url = fields.Url(schemes={"http", "https"}, require_tld=False, load_default=None, allow_none=True,
                             validate=validate.Length(min=1, max=2048),
                             metadata={"description": "Receives the final execution, signed (Standard Webhooks)."})

    @validates("task")
    def _task_not_blank(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("Task must not be blank.")


class TaskResponse(Schema):
    execution_id = fields.String(required=True)
    status = fields.String(required=True)
    websocket_url = fields.String(required=True)


class ErrorDetail(Schema):
    """Open: an error may add context of its own (``execution_status``, ``stage``, ``trace``, …)."""

    class Meta:
        unknown = INCLUDE

    message = fields.String(required=True)
    code = fields.String()
    errors = fields.Dict(metadata={"description": "Field name → its messages (validation errors)."})
    denied = fields.List(fields.Dict())
    retry_after = fields.Integer(metadata={"description": "Seconds to wait (429; also in Retry-After)."})


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
    labels = fields.List(fields.String(), metadata={
        "description": "Labels (phi, privileged, financial) the run carries from labelled content it read or was "
                       "given (a workflow stage's upstream output): its output and the documents it wrote carry them."})
    error = fields.Dict(allow_none=True)
    usage = fields.Dict()
    counts = fields.Dict()
    cancel_requested = fields.Boolean(
        metadata={"description": "A cancel is pending; the run stops before its next step."})
    webhook = fields.Dict(
        metadata={"description": "The terminal webhook's delivery and attempts (when webhook_url is set)."})
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()
    worker = fields.Dict(allow_none=True, metadata={
        "description": "The worker host and process that last took the run ({host, pid}); every event "
                       "it wrote carries the same in data.worker."})


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
    total_count = fields.Integer(metadata={"description": "Events of the execution in all."})


# --- documents, certificates, signing keys (governed executions) ---------------------------------

LABEL_PATTERN = r"^[a-z0-9][a-z0-9_:-]{0,63}$"


class DocumentCreateRequest(Schema):
    """A workspace document the agent's tools can read (labels classify it: phi, privileged, …).
    Posting an existing name replaces its content and labels."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    content = fields.String(required=True, validate=validate.Length(max=1_000_000))
    labels = fields.List(fields.String(validate=validate.Regexp(LABEL_PATTERN)), load_default=list,
                         validate=validate.Length(max=20),
                         metadata={"description": "Classification labels such as phi, privileged, financial."})

    @validates("name")
    def _name_not_blank(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("Name must not be blank.")


class DocumentSchema(Schema):
    document_id = fields.String()
    name = fields.String()
    labels = fields.List(fields.String())
    content = fields.String()
    size = fields.Integer()
    created_by = fields.String(allow_none=True, metadata={"description": "The execution that wrote it, if any."})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class DocumentList(Schema):
    items = fields.List(fields.Nested(DocumentSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    total_count = fields.Integer()


class CertificateSchema(Schema):
    certificate_id = fields.String()
    execution_id = fields.String()
    seq = fields.Integer()
    tool = fields.String()
    arguments_sha256 = fields.String()
    permission = fields.String()
    policy = fields.String()
    policy_version = fields.String()
    checks = fields.List(fields.String())
    issued_at = fields.String()
    prev_hash = fields.String(allow_none=True)
    hash = fields.String()
    key_id = fields.String()
    signature = fields.String()


class CertificateList(Schema):
    execution_id = fields.String()
    items = fields.List(fields.Nested(CertificateSchema))
    violations = fields.List(fields.Dict(), metadata={"description": "Refused calls with their violations."})
    total_count = fields.Integer(metadata={"description": "Certificates in items (all of them: not paged)."})


class JwkSchema(Schema):
    kty = fields.String(metadata={"enum": ["OKP"]})
    crv = fields.String(metadata={"enum": ["Ed25519"]})
    kid = fields.String()
    x = fields.String(metadata={"description": "base64url raw public key"})


class KeySet(Schema):
    keys = fields.List(fields.Nested(JwkSchema))
