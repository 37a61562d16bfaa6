"""Warden's pure policy engine: policies as data, permission resolution, `Guard.verify`,
PHI/secret detectors and redaction, and Ed25519-signed, hash-chained certificates.

Depends only on the standard library, `cryptography` and `rfc8785`; no I/O on the verify path.
"""

from guard.catalog import PERMISSIONS, TOOL_PERMISSIONS, TOOL_SPECS, anthropic_tools, openai_tools, specs_for
from guard.certificates import (
    CERTIFICATE_FIELDS,
    Problem,
    SigningKey,
    arguments_sha256,
    canonical_json,
    certificate_hash,
    issue_certificate,
    key_id_for,
    public_jwk,
    verify_certificate,
    verify_chain,
)
from guard.detectors import Finding, extract_names, find_phi, find_secrets, redact
from guard.model import Decision, ToolCall, VerifyContext
from guard.policy import (
    POLICY_NAMES,
    Policy,
    Resolution,
    UnknownPolicy,
    canonical_name,
    load_policy,
    resolve_permissions,
)
from guard.rules import RULES, register_rule
from guard.verify import Guard, verify

__all__ = [
    "CERTIFICATE_FIELDS",
    "PERMISSIONS",
    "POLICY_NAMES",
    "RULES",
    "TOOL_PERMISSIONS",
    "TOOL_SPECS",
    "Decision",
    "Finding",
    "Guard",
    "Policy",
    "Problem",
    "Resolution",
    "SigningKey",
    "ToolCall",
    "UnknownPolicy",
    "VerifyContext",
    "anthropic_tools",
    "arguments_sha256",
    "canonical_json",
    "canonical_name",
    "certificate_hash",
    "extract_names",
    "find_phi",
    "find_secrets",
    "issue_certificate",
    "key_id_for",
    "openai_tools",
    "load_policy",
    "public_jwk",
    "redact",
    "register_rule",
    "resolve_permissions",
    "specs_for",
    "verify",
    "verify_certificate",
    "verify_chain",
]
