"""Request and response schemas for monitoring Tasks, guardrails and conditions (seed 002).

Requests are allow-lists (``unknown=RAISE``). On this side of the API a schema error is a 400
(DESIGN §4), so views load through :func:`load_400`, which turns marshmallow's error into one.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from compiler.validation import REQUIRED_KEYS
from shared.errors import BadRequest

DELIVERY_TYPES = ("webhook", "notification", "agent")
SENSITIVITIES = ("low", "medium", "high")
MAX_INTENT = 4000
MAX_SCOPE = 200


class StrictBool(fields.Boolean):
    """true or false only (marshmallow's Boolean also takes "yes", 1, "on", …)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class StrictInt(fields.Integer):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return int(value)


def _text(value: str, what: str) -> None:
    if not value.strip():
        raise ValidationError(f"{what} must not be blank.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} must be valid Unicode text (no lone surrogates).") from None


class DeliveryConfig(Schema):
    """How alerts are delivered: webhook (endpoint), notification, or a governed agent run."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(DELIVERY_TYPES))
    endpoint = fields.String(validate=validate.Length(min=1, max=2048),
                             metadata={"description": "Webhook URL (https; http only in development)."})
    task = fields.String(validate=validate.Length(min=1, max=4000),
                         metadata={"description": "agent: what the agent should do when the condition fires."})
    compliance_policy = fields.String(validate=validate.Length(min=1, max=64), metadata={"description": "agent"})
    budget_cents = StrictInt(metadata={"description": "agent: per-run budget in cents."})

    @validates_schema
    def _shape(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("type")
        if kind == "webhook" and "endpoint" not in data:
            raise ValidationError("A webhook delivery needs an endpoint.", "endpoint")
        if kind != "webhook" and "endpoint" in data:
            raise ValidationError("endpoint is only for webhook delivery.", "endpoint")
        if kind != "agent":
            for name in ("task", "compliance_policy", "budget_cents"):
                if name in data:
                    raise ValidationError(f"{name} is only for agent delivery.", name)


class ConstraintsConfig(Schema):
    class Meta:
        unknown = RAISE

    sensitivity = fields.String(validate=validate.OneOf(SENSITIVITIES), allow_none=True)
    namespace = fields.String(validate=validate.Length(min=1, max=100), allow_none=True)


class MonitoringTaskRequest(Schema):
    """Create a monitoring Task from a natural-language intent (seed 002)."""

    class Meta:
        unknown = RAISE

    intent = fields.String(required=True, validate=validate.Length(min=1, max=MAX_INTENT),
                           metadata={"example": "Alert me when AAPL price rises significantly"})
    entity_scope = fields.String(required=True, validate=validate.Length(min=1, max=MAX_SCOPE),
                                 metadata={"example": "AAPL"})
    delivery = fields.Nested(DeliveryConfig, required=True)
    constraints = fields.Nested(ConstraintsConfig, load_default=None, allow_none=True)
    dry_run = StrictBool(load_default=False)

    @validates("intent")
    def _intent(self, value: str, **_: Any) -> None:
        _text(value, "intent")

    @validates("entity_scope")
    def _scope(self, value: str, **_: Any) -> None:
        _text(value, "entity_scope")


PATCHABLE = ("condition_version", "delivery", "entity_scope", "status")


class TaskPatchRequest(Schema):
    """Operational settings only; logic changes go through calibration (seed 002)."""

    class Meta:
        unknown = RAISE

    condition_version = fields.String(validate=validate.Regexp(r"^1\.[0-9]{1,6}$",
                                                               error="Not a condition version such as 1.1."))
    delivery = fields.Nested(DeliveryConfig)
    entity_scope = fields.String(validate=validate.Length(min=1, max=MAX_SCOPE))
    status = fields.String(validate=validate.OneOf(("active", "paused")))

    @validates("entity_scope")
    def _scope(self, value: str, **_: Any) -> None:
        _text(value, "entity_scope")


class ExplainRequest(Schema):
    """Either a stored condition version, or an intent to compile without persisting."""

    class Meta:
        unknown = RAISE

    condition_id = fields.String(validate=validate.Length(min=1, max=64))
    condition_version = fields.String(validate=validate.Length(min=1, max=16))
    intent = fields.String(validate=validate.Length(min=1, max=MAX_INTENT))
    entity_scope = fields.String(validate=validate.Length(min=1, max=MAX_SCOPE))
    constraints = fields.Nested(ConstraintsConfig, allow_none=True)

    @validates_schema
    def _one_form(self, data: dict[str, Any], **_: Any) -> None:
        by_id = "condition_id" in data
        by_intent = "intent" in data or "entity_scope" in data
        if by_id == by_intent:
            raise ValidationError("Pass either condition_id (+ condition_version) or intent + entity_scope.")
        if by_intent and not ("intent" in data and "entity_scope" in data):
            raise ValidationError("intent and entity_scope are both required.", "entity_scope"
                                  if "intent" in data else "intent")
        if by_id and "constraints" in data:
            raise ValidationError("constraints go with an intent, not a stored condition.", "constraints")
        for name in ("intent", "entity_scope"):
            if name in data:
                _text(data[name], name)


class CalibrationRequest(Schema):
    class Meta:
        unknown = RAISE

    params = fields.Dict(keys=fields.String(), metadata={"description": "New values (partial allowed)."})
    feedback = fields.String(validate=validate.OneOf(("too_noisy", "too_quiet")))
    from_version = fields.String(metadata={"description": "Calibrate from this version (default: latest)."})

    @validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if ("params" in data) == ("feedback" in data):
            raise ValidationError("Pass exactly one of params or feedback.")


_ABSENT: dict[str, Any] = {"not": {}}  # JSON Schema for "this property must not be present"


def _without(*names: str) -> dict[str, Any]:
    return {name: _ABSENT for name in names}


# The cross-field rules above (the ``validates_schema`` methods) in JSON Schema, merged into the
# OpenAPI document's components, so that what the document calls valid is what the views accept.
OPENAPI_RULES: dict[str, dict[str, Any]] = {
    "TaskPatchRequest": {"minProperties": 1},
    "DeliveryConfig": {"oneOf": [
        {"properties": {"type": {"enum": ["webhook"]}, **_without("task", "compliance_policy", "budget_cents")},
         "required": ["endpoint"]},
        {"properties": {"type": {"enum": ["notification"]},
                        **_without("endpoint", "task", "compliance_policy", "budget_cents")}},
        {"properties": {"type": {"enum": ["agent"]}, **_without("endpoint")}},
    ]},
    "ExplainRequest": {"oneOf": [
        {"required": ["condition_id"], "properties": _without("intent", "entity_scope", "constraints")},
        {"required": ["intent", "entity_scope"], "properties": _without("condition_id")},
    ]},
    "CalibrationRequest": {"oneOf": [
        {"required": ["params"], "properties": _without("feedback")},
        {"required": ["feedback"], "properties": _without("params")},
    ]},
}

# PUT /guardrails takes a whole document, checked by compiler.validation (every problem listed);
# the document states its top-level keys.
GUARDRAILS_INPUT: dict[str, Any] = {
    "type": "object", "required": list(REQUIRED_KEYS),
    "description": "A complete guardrails document (see GET /api/v1/guardrails for the current one).",
    "properties": {"version": {"type": "string", "minLength": 1, "maxLength": 64}},
}


def load_400(schema: Schema, body: Any) -> dict[str, Any]:
    """Load ``body`` or raise a 400 naming every field that failed."""
    try:
        return schema.load(body)  # type: ignore[no-any-return]
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        names = ", ".join(sorted(str(k) for k in messages))
        raise BadRequest(f"Request body failed validation: {names}", code="validation_error",
                         errors=messages) from None


# ---- responses (documentation: the OpenAPI document is generated from these) ----

class MonitoringTask(Schema):
    """The Task object, exactly the seed's fields."""

    task_id = fields.String()
    intent = fields.String()
    concept_id = fields.String()
    concept_version = fields.String()
    condition_id = fields.String()
    condition_version = fields.String()
    action_id = fields.String()
    action_version = fields.String()
    entity_scope = fields.String()
    status = fields.String(metadata={"enum": ["active", "paused", "deleted", "preview"]})
    created_at = fields.DateTime()
    last_triggered_at = fields.DateTime(allow_none=True)


class StrategySchema(Schema):
    type = fields.String(metadata={"enum": ["threshold", "change", "anomaly", "absence"]})
    params = fields.Dict()


class ConditionSchema(Schema):
    condition_id = fields.String()
    version = fields.String()
    concept_id = fields.String()
    concept_version = fields.String()
    strategy = fields.Nested(StrategySchema)
    metric = fields.String()
    severity = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    provenance = fields.Dict()
    plan = fields.Dict()
    guardrails_version = fields.String()
    created_from = fields.Dict(allow_none=True)
    immutable = fields.Boolean()
    created_at = fields.DateTime()
    trace = fields.List(fields.Dict(), metadata={"description": "The compiler's stages (one version's read only)."})


class MonitoringTaskDetail(MonitoringTask):
    concept = fields.Dict(allow_none=True)
    condition = fields.Nested(ConditionSchema, allow_none=True)
    action = fields.Dict(allow_none=True)
    trigger = fields.Dict(metadata={"description": "last_triggered_at, trigger_count"})
    guardrails_version = fields.String()
    updated_at = fields.DateTime()


class DryRunResult(Schema):
    status = fields.String(metadata={"enum": ["preview"]})
    intent = fields.String()
    entity_scope = fields.String()
    concept = fields.Dict()
    condition = fields.Nested(ConditionSchema)
    action = fields.Dict()
    validation = fields.Dict()
    trace = fields.List(fields.Dict())
    guardrails_version = fields.String()


class MonitoringTaskList(Schema):
    items = fields.List(fields.Nested(MonitoringTask))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)
    total_count = fields.Integer()


class ConditionVersions(Schema):
    condition_id = fields.String()
    latest = fields.Nested(ConditionSchema)
    versions = fields.List(fields.Dict())


class Explanation(Schema):
    """What POST /conditions/explain answers (compiler.explain, plus what was explained)."""

    condition_id = fields.String(metadata={"description": "When a stored condition was explained."})
    condition_version = fields.String()
    intent = fields.String(metadata={"description": "When an intent was explained."})
    entity_scope = fields.String()
    strategy = fields.Nested(StrategySchema)
    metric = fields.String(allow_none=True)
    severity = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    guardrails_version = fields.String(allow_none=True)
    explained_with = fields.String()
    parameters = fields.List(fields.Dict())
    stages = fields.List(fields.Dict())
    sentences = fields.List(fields.String())


class GuardrailsDocument(Schema):
    version = fields.String()
    revision = fields.Integer()
    source = fields.String(metadata={"enum": ["default", "workspace"]})
    document = fields.Dict()
    created_at = fields.DateTime(allow_none=True, metadata={"description": "null for the built-in default."})
    versions = fields.List(fields.Dict())
