"""The permission universe and the tool catalog the agent sees.

`PERMISSIONS` is the closed set of capabilities a request may ask for, in the canonical order
used everywhere a permission list is stored or shown. `TOOL_PERMISSIONS` maps each tool to the
one permission it needs, and `TOOL_SPECS` describes the tools (name, description, JSON Schema of
the arguments) in a provider-neutral shape the executor translates for OpenAI or Anthropic.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

PERMISSIONS: tuple[str, ...] = (
    "fs:read",
    "fs:write",
    "network:http:read",
    "network:http:write",
    "email:send",
    "pii:redact",
)

# Position of each permission in the canonical order (used to sort permission lists stably).
PERMISSION_ORDER: MappingProxyType[str, int] = MappingProxyType({p: i for i, p in enumerate(PERMISSIONS)})

TOOL_PERMISSIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "read_document": "fs:read",
        "write_document": "fs:write",
        "list_documents": "fs:read",
        "http_get": "network:http:read",
        "http_post": "network:http:write",
        "send_email": "email:send",
        "redact_text": "pii:redact",
    }
)


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }


TOOL_SPECS: tuple[dict[str, Any], ...] = (
    _spec(
        "read_document",
        "Read one workspace document by its id or name. Returns its name, labels and content.",
        {"document_id": _str("The document id (doc_...) or its name.")},
        ["document_id"],
    ),
    _spec(
        "write_document",
        "Create or overwrite a workspace document. Labels (for example phi, privileged, financial) "
        "classify the content. Some compliance policies require a justification for every write.",
        {
            "name": _str("Document name; writing an existing name overwrites that document."),
            "content": _str("The full text content of the document."),
            "labels": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Classification labels for the document.",
            },
            "justification": _str("Why this write is needed (recorded for audit)."),
        },
        ["name", "content"],
    ),
    _spec("list_documents", "List the workspace documents (id, name, labels).", {}, []),
    _spec(
        "http_get",
        "Fetch a URL with HTTP GET and return the response body (truncated).",
        {"url": _str("An absolute http(s) URL.")},
        ["url"],
    ),
    _spec(
        "http_post",
        "Send a request body to a URL with HTTP POST and return the response body (truncated).",
        {"url": _str("An absolute http(s) URL."), "body": _str("The request body.")},
        ["url", "body"],
    ),
    _spec(
        "send_email",
        "Send an email (delivered to the workspace outbox).",
        {
            "to": _str("Recipient email address."),
            "subject": _str("Subject line."),
            "body": _str("Plain-text body."),
        },
        ["to", "subject", "body"],
    ),
    _spec(
        "redact_text",
        "Replace personal identifiers (names, SSNs, MRNs, phone numbers, emails, dates, addresses, "
        "...) in a text with typed placeholders such as [REDACTED:SSN]. Returns the redacted text.",
        {"text": _str("The text to redact.")},
        ["text"],
    ),
)

TOOL_SPECS_BY_NAME: MappingProxyType[str, dict[str, Any]] = MappingProxyType(
    {spec["name"]: spec for spec in TOOL_SPECS}
)


def specs_for(permissions: Iterable[str]) -> list[dict[str, Any]]:
    """The tool specs whose required permission is among `permissions` (catalog order)."""
    held = set(permissions)
    return [spec for spec in TOOL_SPECS if TOOL_PERMISSIONS[spec["name"]] in held]


def openai_tools(specs: Iterable[Mapping[str, Any]] = TOOL_SPECS) -> list[dict[str, Any]]:
    """Specs in the OpenAI Chat Completions `tools` shape."""
    return [
        {
            "type": "function",
            "function": {
                "name": s["name"],
                "description": s["description"],
                "parameters": copy.deepcopy(s["parameters"]),
            },
        }
        for s in specs
    ]


def anthropic_tools(specs: Iterable[Mapping[str, Any]] = TOOL_SPECS) -> list[dict[str, Any]]:
    """Specs in the Anthropic Messages `tools` shape."""
    return [
        {"name": s["name"], "description": s["description"], "input_schema": copy.deepcopy(s["parameters"])}
        for s in specs
    ]
