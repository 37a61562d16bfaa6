"""The agent's tools. Each runs only after Guard.verify allowed the call.

Database tools run inside the executor's step transaction (``ctx.cur``), so their effect, the
certificate and the step's state commit together or not at all: a redelivered run never
repeats them. The network tools (``EXTERNAL``) cannot be part of a transaction; the executor
marks them started first and never repeats an ``http_post`` whose outcome is unknown.

A tool returns a JSON-able dict or raises :class:`ToolError`; both go back to the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from guard import redact
from shared import safehttp
from shared.config import Settings
from shared.ids import new_id
from shared.store import documents

EXTERNAL = frozenset({"http_get", "http_post"})
# Tools whose effect is a database write: they run inside the step's transaction.
WRITES = frozenset({"write_document", "send_email"})
MAX_DOCUMENT_CHARS = 20_000  # what read_document hands the model
MAX_HTTP_BODY_CHARS = 16_000
HTTP_TIMEOUT_S = 10.0


class ToolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ToolContext:
    workspace_id: str
    execution_id: str
    call_key: str
    settings: Settings
    record_names: tuple[str, ...] = ()
    cur: Any = None  # the step transaction's cursor (database tools only)
    documents: list[Any] | None = None  # the workspace's documents as the guard just read them


def _read_document(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    doc = documents.get(ctx.cur, ctx.workspace_id, args["document_id"])
    if doc is None:
        raise ToolError("document_not_found", f"No document {args['document_id']!r} in this workspace")
    content = doc.content[:MAX_DOCUMENT_CHARS]
    return {"document_id": doc.id, "name": doc.name, "labels": doc.labels, "content": content,
            "truncated": len(doc.content) > len(content)}


def _list_documents(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    docs = ctx.documents if ctx.documents is not None else documents.list_all(ctx.cur, ctx.workspace_id)
    return {"documents": [d.summary() for d in docs]}


def _write_document(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    name = args["name"].strip()
    if not name or len(name) > 200:
        raise ToolError("invalid_name", "A document name must be 1-200 characters")
    doc, created = documents.upsert(ctx.cur, ctx.workspace_id, name, args["content"], args.get("labels"),
                                    ctx.execution_id)
    return {"document_id": doc.id, "name": doc.name, "labels": doc.labels, "created": created}


def _send_email(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if "@" not in args["to"]:
        raise ToolError("invalid_recipient", "The recipient must be an email address")
    email_id = new_id("email")
    # Never a real mail server: the message lands in the workspace's outbox table.
    ctx.cur.execute("INSERT INTO email_outbox (id, workspace_id, execution_id, call_key, recipient, subject, body)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (email_id, ctx.workspace_id, ctx.execution_id, ctx.call_key, args["to"], args["subject"],
                     args["body"]))
    return {"email_id": email_id, "status": "queued", "to": args["to"]}


def _redact_text(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    text, findings = redact(args["text"], ctx.record_names)
    return {"text": text, "redactions": dict(Counter(f.type for f in findings))}


def _http(method: str, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    body = args["body"].encode() if method == "POST" else None
    try:
        resp = safehttp.request(method, args["url"], body=body,
                                headers={"content-type": "text/plain; charset=utf-8"} if body is not None else {},
                                allow_private=ctx.settings.allow_private_webhooks, timeout=HTTP_TIMEOUT_S,
                                max_bytes=MAX_HTTP_BODY_CHARS * 4, follow_redirects=method == "GET")
    except safehttp.UnsafeTarget as exc:
        raise ToolError("unsafe_target", f"Refused: {exc}") from None
    except safehttp.HttpError as exc:
        raise ToolError("http_error", str(exc)) from None
    text = resp.text()
    return {"status": resp.status, "content_type": resp.headers.get("content-type"),
            "body": text[:MAX_HTTP_BODY_CHARS], "truncated": resp.truncated or len(text) > MAX_HTTP_BODY_CHARS}


TOOLS = {
    "read_document": _read_document,
    "list_documents": _list_documents,
    "write_document": _write_document,
    "send_email": _send_email,
    "redact_text": _redact_text,
    "http_get": lambda args, ctx: _http("GET", args, ctx),
    "http_post": lambda args, ctx: _http("POST", args, ctx),
}


def run(tool: str, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    fn = TOOLS.get(tool)
    if fn is None:  # Guard.verify refuses unknown tools first; this is a second lock on the door
        raise ToolError("unknown_tool", f"Unknown tool {tool!r}")
    return fn(args, ctx)
