"""Policies as data: loading, aliases, ceilings and permission resolution."""

import json
from importlib import resources

import pytest

from guard import (
    PERMISSIONS,
    POLICY_NAMES,
    TOOL_PERMISSIONS,
    TOOL_SPECS,
    UnknownPolicy,
    load_policy,
    resolve_permissions,
)


def test_universe_and_catalog():
    assert PERMISSIONS == (
        "fs:read",
        "fs:write",
        "network:http:read",
        "network:http:write",
        "email:send",
        "pii:redact",
    )
    assert dict(TOOL_PERMISSIONS) == {
        "read_document": "fs:read",
        "write_document": "fs:write",
        "list_documents": "fs:read",
        "http_get": "network:http:read",
        "http_post": "network:http:write",
        "send_email": "email:send",
        "redact_text": "pii:redact",
    }
    assert [s["name"] for s in TOOL_SPECS] == list(TOOL_PERMISSIONS)
    for spec in TOOL_SPECS:
        params = spec["parameters"]
        assert params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"])
        assert spec["description"]
    json.dumps(TOOL_SPECS)  # hands straight to provider SDKs


def test_policy_names_and_alias():
    assert set(POLICY_NAMES) == {"default", "hipaa", "sox", "legal", "legal_privilege"}
    assert load_policy("legal") is load_policy("legal_privilege")
    assert load_policy("legal").name == "legal_privilege"
    assert load_policy("hipaa") is load_policy("hipaa")  # cached


@pytest.mark.parametrize("bad", ["", "HIPAA", "gdpr", "legal-privilege", None, 3])
def test_unknown_policy(bad):
    with pytest.raises(UnknownPolicy):
        load_policy(bad)
    assert issubclass(UnknownPolicy, ValueError)


@pytest.mark.parametrize("name", ["default", "hipaa", "sox", "legal_privilege"])
def test_preset_files_are_well_formed(name):
    text = resources.files("guard").joinpath("policies", f"{name}.json").read_text()
    doc = json.loads(text)
    policy = load_policy(name)
    assert policy.document == doc
    assert json.loads(json.dumps(dict(policy.document))) == doc
    assert policy.name == doc["name"] == name
    assert isinstance(policy.version, str) and policy.version.count(".") == 2
    assert policy.max_permissions <= set(PERMISSIONS)
    assert set(policy.default_permissions) <= policy.max_permissions
    assert policy.default_permissions
    assert policy.rules[0]["id"] == "secret_in_outbound"  # the default rule is in every policy
    assert "secret_in_outbound" in policy.halting
    assert {r["id"] for r in policy.rules} >= policy.halting - {"budget_exceeded"}


def test_titles_and_ceilings():
    assert load_policy("hipaa").title == "HIPAA"
    assert load_policy("sox").title == "SOX"
    assert load_policy("legal").title == "Legal privilege"
    assert load_policy("default").title == "Default"
    assert load_policy("hipaa").max_permissions == {"fs:read", "fs:write", "email:send", "pii:redact"}
    assert load_policy("default").max_permissions == set(PERMISSIONS)


def test_resolve_defaults_when_omitted():
    policy = load_policy("hipaa")
    res = resolve_permissions(policy, None)
    assert res.effective == list(policy.default_permissions)
    assert res.denied == []


def test_resolve_exceeds_ceiling_exact_shape():
    res = resolve_permissions(load_policy("hipaa"), ["network:http:read"])
    assert res.effective == []
    assert res.denied == [
        {
            "permission": "network:http:read",
            "reason": "exceeds_policy_ceiling",
            "detail": "Permission is not within the HIPAA policy allowed set",
        }
    ]


def test_resolve_partial_dedup_and_canonical_order():
    res = resolve_permissions(
        load_policy("hipaa"),
        ["pii:redact", "network:http:write", "fs:read", "pii:redact", "bogus", "network:http:read"],
    )
    assert res.effective == ["fs:read", "pii:redact"]
    assert [d["permission"] for d in res.denied] == ["network:http:read", "network:http:write", "bogus"]
    assert res.denied[2]["reason"] == "unknown_permission"
    assert res.denied[2]["detail"]
    assert all(d["reason"] == "exceeds_policy_ceiling" for d in res.denied[:2])


def test_resolve_default_policy_allows_everything():
    res = resolve_permissions(load_policy("default"), list(reversed(PERMISSIONS)))
    assert res.effective == list(PERMISSIONS)
    assert res.denied == []


def test_resolve_empty_list_is_empty_not_defaults():
    res = resolve_permissions(load_policy("sox"), [])
    assert res.effective == [] and res.denied == []


def test_detail_uses_policy_title():
    res = resolve_permissions(load_policy("legal"), ["nope"])
    assert res.denied[0]["reason"] == "unknown_permission"
    # all six are inside the legal ceiling, so the title appears only for ceiling denials
    hipaa = resolve_permissions(load_policy("hipaa"), ["network:http:write"])
    assert "HIPAA policy" in hipaa.denied[0]["detail"]
