"""guard/ stays pure: stdlib + cryptography + rfc8785 imports only, and no I/O on the verify path."""

import ast
import builtins
import socket
import sys
from pathlib import Path

import guard
from guard import (
    Guard,
    SigningKey,
    ToolCall,
    VerifyContext,
    anthropic_tools,
    extract_names,
    issue_certificate,
    load_policy,
    openai_tools,
    specs_for,
    verify_chain,
)

ALLOWED = set(sys.stdlib_module_names) | {"cryptography", "rfc8785", "guard", "__future__"}


def test_guard_imports_only_stdlib_and_its_two_libraries():
    for path in Path(guard.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


def test_modules_are_small_and_documented():
    for path in Path(guard.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path.name
        assert ast.get_docstring(ast.parse(text)), path.name


def test_no_io_on_the_verify_and_sign_path(monkeypatch):
    policy = load_policy("legal")
    key = SigningKey.from_seed(bytes(32))
    ctx = VerifyContext(
        "exec_1", policy, policy.max_permissions, 100, 0, {"d": {"labels": ["privileged"], "content": "x " * 50}}
    )
    call = ToolCall("send_email", {"to": "a@example.com", "subject": "hi", "body": "hello there"})

    def refuse(*args, **kwargs):
        raise AssertionError("I/O on the verify path")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    decision = Guard.verify(call, ctx)
    assert decision.allowed
    cert = issue_certificate(
        key,
        certificate_id="cert_1",
        execution_id="exec_1",
        seq=1,
        call=call,
        decision=decision,
        policy=policy,
        issued_at="2026-11-23T10:00:00Z",
        prev_hash=None,
    )
    assert verify_chain([cert], [key.public_jwk()]) == []


def test_provider_tool_shapes():
    assert [s["name"] for s in specs_for(["fs:read"])] == ["read_document", "list_documents"]
    o = openai_tools(specs_for(["email:send"]))
    assert o[0]["type"] == "function" and o[0]["function"]["name"] == "send_email"
    assert o[0]["function"]["parameters"]["required"] == ["to", "subject", "body"]
    a = anthropic_tools()
    assert {t["name"] for t in a} == set(guard.TOOL_PERMISSIONS)
    assert all(t["input_schema"]["type"] == "object" for t in a)
    a[0]["input_schema"]["properties"].clear()  # copies: the catalog is not mutated
    assert guard.TOOL_SPECS[0]["parameters"]["properties"]


def test_extract_names():
    text = "Patient: Jane Doe\nSeen with Mr. John Smith. Name: Ana Lopez-Garcia. Mr. John Smith again."
    assert extract_names(text) == ["Jane Doe", "John Smith", "Ana Lopez-Garcia"]
    assert extract_names("no names here") == []
