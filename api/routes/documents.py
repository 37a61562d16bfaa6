"""Workspace documents: what the agent's read_document / write_document / list_documents see."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import workspace_id
from api.body import json_object
from api.schemas import DocumentCreateRequest
from api.services import services
from shared.errors import NotFound
from shared.paging import decode_cursor, encode_cursor, parse_limit
from shared.store import documents

bp = Blueprint("documents", __name__)
_create = DocumentCreateRequest()


def _doc(d: documents.Document, *, content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"document_id": d.id, "name": d.name, "labels": d.labels, "size": len(d.content),
                           "created_by": d.created_by, "created_at": d.created_at.isoformat(),
                           "updated_at": d.updated_at.isoformat()}
    if content:
        out["content"] = d.content
    return out


@bp.post("/documents")
def create_document() -> Response:
    """Upload a document (an existing name is replaced).
    ---
    post:
      tags: [documents]
      requestBody:
        required: true
        content: {application/json: {schema: DocumentCreateRequest}}
      responses:
        201: {description: Created, content: {application/json: {schema: DocumentSchema}}}
        200: {description: Replaced an existing document of that name, content: {application/json: {schema: DocumentSchema}}}
        400: {description: Body is not a JSON object, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        422: {description: Field validation failed, content: {application/json: {schema: ErrorResponse}}}
    """
    data = _create.load(json_object())
    labels = sorted(set(data["labels"]))
    with services().db.transaction() as cur:
        doc, created = documents.upsert(cur, workspace_id(), data["name"].strip(), data["content"], labels, None)
    resp = jsonify(_doc(doc, content=False))
    resp.status_code = 201 if created else 200
    resp.headers["Location"] = f"/api/v1/documents/{doc.id}"
    return resp


@bp.get("/documents")
def list_documents() -> Response:
    """List documents, newest first (content omitted; fetch one for it).
    ---
    get:
      tags: [documents]
      parameters:
        - {in: query, name: label, schema: {type: string}}
        - {in: query, name: limit, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
        - {in: query, name: cursor, schema: {type: string}}
      responses:
        200: {description: A page of documents, content: {application/json: {schema: DocumentList}}}
        400: {description: Bad limit or cursor, content: {application/json: {schema: ErrorResponse}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    limit = parse_limit(request.args.get("limit"))
    after = decode_cursor(request.args.get("cursor"))
    items, has_more, total = documents.list_page(services().db, workspace_id(), after_id=after, limit=limit,
                                          label=request.args.get("label"))
    return jsonify({"items": [_doc(d, content=False) for d in items], "has_more": has_more,
                    "next_cursor": encode_cursor(items[-1].id) if has_more and items else None,
                    "total_count": total})


@bp.get("/documents/<document_id>")
def get_document(document_id: str) -> Response:
    """Fetch one document with its content.
    ---
    get:
      tags: [documents]
      parameters:
        - {in: path, name: document_id, required: true, schema: {type: string}}
      responses:
        200: {description: The document, content: {application/json: {schema: DocumentSchema}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
        404: {description: No such document in this workspace, content: {application/json: {schema: ErrorResponse}}}
    """
    with services().db.transaction() as cur:
        doc = documents.get(cur, workspace_id(), document_id)
    if doc is None or doc.id != document_id:  # documents.get also matches names; the API uses ids
        raise NotFound(f"Document {document_id} not found", code="document_not_found")
    return jsonify(_doc(doc, content=True))
