"""OpenAPI 3 document generated from the marshmallow schemas and the views' docstrings
(apispec), served at /api/v1/openapi.json, with Swagger UI at /api/v1/docs/ served from the pip
package ``flask-swagger-ui`` (its JavaScript and CSS ship in the wheel: the page works offline).
``/`` and ``/api/v1/docs`` redirect to it (``/`` to the dashboard when the app has one)."""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask, Response, jsonify, redirect
from flask_swagger_ui import get_swaggerui_blueprint

from api import monitoring_schemas, schemas, signals_schemas, workflow_schemas

DOCS_PATH = "/api/v1/docs"
_DOCS_CONFIG = {"app_name": "Warden API", "docExpansion": "none"}

SCHEMAS = ("AgentTaskRequest", "TaskResponse", "ErrorResponse", "ExecutionSchema", "ExecutionList",
           "EventSchema", "EventList", "DocumentCreateRequest", "DocumentSchema", "DocumentList", "CertificateSchema",
           "CertificateList", "JwkSchema", "KeySet")
# Nested schemas first, so apispec references them instead of registering them twice.
MONITORING_SCHEMAS = ("StrategySchema", "ConditionSchema", "MonitoringTaskRequest", "MonitoringTask",
                      "MonitoringTaskDetail", "MonitoringTaskList", "DryRunResult", "TaskPatchRequest",
                      "ConditionVersions", "ExplainRequest", "Explanation", "CalibrationRequest", "GuardrailsDocument")


def build_spec(app: Flask) -> dict:
    spec = APISpec(title="Warden API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[FlaskPlugin(), MarshmallowPlugin()],
                   info={"description": "Governed agent executions and intent-compiled monitoring tasks."},
                   servers=[{"url": "/"}])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name in SCHEMAS:
        spec.components.schema(name, schema=getattr(schemas, name))
    for name in MONITORING_SCHEMAS:
        spec.components.schema(name, schema=getattr(monitoring_schemas, name))
    for name in signals_schemas.SCHEMAS:
        spec.components.schema(name, schema=getattr(signals_schemas, name))
    for name in workflow_schemas.SCHEMAS:
        spec.components.schema(name, schema=getattr(workflow_schemas, name))
    spec.components.schema("GuardrailsInput", component=monitoring_schemas.GUARDRAILS_INPUT)
    for name in getattr(app, "extra_openapi_schemas", {}):
        spec.components.schema(name, schema=app.extra_openapi_schemas[name])  # type: ignore[attr-defined]
    with app.test_request_context():
        for rule_name, view in app.view_functions.items():
            if view.__doc__ and "---" in view.__doc__ and not rule_name.startswith("static"):
                spec.path(view=view)
    doc = spec.to_dict()
    for rules in (monitoring_schemas.OPENAPI_RULES, signals_schemas.OPENAPI_RULES):
        for name, rule in rules.items():
            _merge(doc["components"]["schemas"][name], rule)
    for path, ops in doc.get("paths", {}).items():
        if path.startswith("/api/v1/"):
            for op in ops.values():
                if isinstance(op, dict):
                    _every_api_operation(op)
    return doc


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
_INT_HEADER = {"schema": {"type": "integer"}}
# What every /api/v1 operation may answer, whatever its view does: the key check and the rate
# limit run before any view (api/auth.py).
_COMMON_RESPONSES = {
    "401": {"description": "Missing or invalid API key", "content": _ERROR},
    "429": {"description": "Rate limited (token bucket per key)", "content": _ERROR,
            "headers": {"Retry-After": _INT_HEADER, "RateLimit-Limit": _INT_HEADER,
                        "RateLimit-Remaining": _INT_HEADER, "RateLimit-Reset": _INT_HEADER}},
}
# ... and every one that reads a JSON body (api/body.py), before the view's own checks.
_BODY_RESPONSES = {
    "400": {"description": "Malformed JSON, or a body that is not a JSON object", "content": _ERROR},
    "413": {"description": "Body over the size limit (1 MiB by default)", "content": _ERROR},
}
# Shapes the views check themselves (shared/paging.py, api/idempotency.py), stated once here.
_PARAMETER_SCHEMAS = {
    ("query", "cursor"): {"type": "string", "pattern": "^[A-Za-z0-9_-]*$",
                          "description": "Opaque: the next_cursor of the previous page"},
    ("header", "Idempotency-Key"): {"type": "string", "minLength": 1, "maxLength": 255},
}


def _merge(into: dict, rule: dict) -> None:
    for key, value in rule.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _every_api_operation(op: dict) -> None:
    op.setdefault("security", [{"bearer": []}])
    responses = op.setdefault("responses", {})
    for status, response in _COMMON_RESPONSES.items():
        responses.setdefault(status, response)
    if "requestBody" in op:
        for status, response in _BODY_RESPONSES.items():
            responses.setdefault(status, response)
    for param in op.get("parameters", []):
        schema = _PARAMETER_SCHEMAS.get((param.get("in"), param.get("name")))
        if schema is not None:
            param["schema"] = dict(schema)


def init_app(app: Flask) -> None:
    cache: dict[str, dict] = {}

    @app.get("/api/v1/openapi.json")
    def openapi_json() -> Response:
        if "doc" not in cache:
            cache["doc"] = build_spec(app)
        return jsonify(cache["doc"])

    app.register_blueprint(get_swaggerui_blueprint(DOCS_PATH, "/api/v1/openapi.json", config=dict(_DOCS_CONFIG),
                                                   blueprint_name="docs"))

    @app.get("/")
    def root() -> Response:
        """The dashboard when this app serves one, else the API docs: never a 404 for a first visit."""
        paths = {rule.rule for rule in app.url_map.iter_rules()}
        target = next((p for p in ("/dashboard", "/dashboard/") if p in paths), DOCS_PATH + "/")
        return redirect(target, code=302)
