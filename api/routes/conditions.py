"""Conditions (versions, explain, apply-calibration) and the workspace guardrails document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from werkzeug.routing import BaseConverter

from api import calibration
from api.auth import workspace_id
from api.body import json_object
from api.monitoring import clean_constraints
from api.monitoring_schemas import CalibrationRequest, ExplainRequest, load_400
from api.services import services

bp = Blueprint("conditions", __name__)
_explain_schema = ExplainRequest()
_calibration_schema = CalibrationRequest()


class ConditionRef(BaseConverter):
    """A condition id in a path: any segment but ``explain``, so that /conditions/explain is the
    explain operation alone (405 for GET, and an Allow header naming POST only) instead of also
    matching "the condition named explain"."""

    regex = r"(?!explain$)[^/]+"


@bp.get("/conditions/<condition_ref:condition_id>")
def get_condition(condition_id: str) -> Response:
    """The latest version of a condition and the list of all its versions.
    ---
    get:
      tags: [calibration]
      parameters:
        - {in: path, name: condition_id, required: true, schema: {type: string}}
      responses:
        200: {description: Latest version and version list, content: {application/json: {schema: ConditionVersions}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such condition in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(calibration.condition_versions(services(), workspace_id(), condition_id))


@bp.get("/conditions/<condition_id>/versions/<version>")
def get_condition_version(condition_id: str, version: str) -> Response:
    """One immutable condition version, with its trace.
    ---
    get:
      tags: [calibration]
      parameters:
        - {in: path, name: condition_id, required: true, schema: {type: string}}
        - {in: path, name: version, required: true, schema: {type: string, example: "1.1"}}
      responses:
        200: {description: The version, content: {application/json: {schema: ConditionSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such condition or version, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(calibration.condition_version(services(), workspace_id(), condition_id, version))


@bp.post("/conditions/explain")
def explain() -> Response:
    """Where each parameter came from (word → severity → prior → value), as data and sentences.
    Pass a stored condition ({condition_id, condition_version?}) or an intent ({intent,
    entity_scope, constraints?}: compiled on the compiler queue, nothing persisted).
    ---
    post:
      tags: [calibration]
      requestBody:
        required: true
        content: {application/json: {schema: ExplainRequest}}
      responses:
        200: {description: The explanation, content: {application/json: {schema: Explanation}}}
        400: {description: Invalid request, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such condition or version, content: {application/json: {schema: ErrorResponse}}}
        422: {description: The intent could not be resolved, content: {application/json: {schema: ErrorResponse}}}
        503: {description: No compiler worker available, content: {application/json: {schema: ErrorResponse}}}
    """
    data = load_400(_explain_schema, json_object())
    svc, ws = services(), workspace_id()
    if "condition_id" in data:
        return jsonify(calibration.explain_stored(svc, ws, data["condition_id"], data.get("condition_version")))
    return jsonify(calibration.explain_intent(svc, ws, data["intent"], data["entity_scope"],
                                              clean_constraints(data.get("constraints"))))


@bp.post("/conditions/<condition_id>/apply-calibration")
def apply_calibration(condition_id: str) -> Response:
    """Create a new immutable version from new params or feedback (too_noisy | too_quiet).
    Tasks keep their pinned version until PATCH /tasks/{id} with condition_version.
    ---
    post:
      tags: [calibration]
      parameters:
        - {in: path, name: condition_id, required: true, schema: {type: string}}
      requestBody:
        required: true
        content: {application/json: {schema: CalibrationRequest, example: {feedback: too_noisy}}}
      responses:
        201: {description: The new version, content: {application/json: {schema: ConditionSchema}}}
        400: {description: Invalid, foreign or out-of-range parameters, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such condition, content: {application/json: {schema: ErrorResponse}}}
    """
    data = load_400(_calibration_schema, json_object())
    created = calibration.apply_calibration(services(), workspace_id(), condition_id, data)
    resp = jsonify(created)
    resp.status_code = 201
    resp.headers["Location"] = f"/api/v1/conditions/{condition_id}/versions/{created['version']}"
    return resp


@bp.get("/guardrails")
def get_guardrails() -> Response:
    """The workspace's current guardrails document (the shipped default until a PUT).
    ---
    get:
      tags: [guardrails]
      responses:
        200: {description: Current document and the version list, content: {application/json: {schema: GuardrailsDocument}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(calibration.guardrails_view(services(), workspace_id()))


@bp.get("/guardrails/versions/<int:revision>")
def get_guardrails_revision(revision: int) -> Response:
    """One guardrails revision (0 is the shipped default); PUT it back to return to it.
    ---
    get:
      tags: [guardrails]
      parameters:
        - {in: path, name: revision, required: true, schema: {type: integer, minimum: 0}}
      responses:
        200: {description: The revision, content: {application/json: {schema: GuardrailsDocument}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such revision in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(calibration.guardrails_revision(services(), workspace_id(), revision))


@bp.put("/guardrails")
def put_guardrails() -> Response:
    """Replace the guardrails document: a new version, used by Tasks compiled from now on.
    Existing Tasks keep the version they were compiled with.
    ---
    put:
      tags: [guardrails]
      requestBody:
        required: true
        content: {application/json: {schema: GuardrailsInput}}
      responses:
        200: {description: The stored version, content: {application/json: {schema: GuardrailsDocument}}}
        400: {description: The document failed validation (every problem listed), content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    return jsonify(calibration.put_guardrails(services(), workspace_id(), json_object()))
