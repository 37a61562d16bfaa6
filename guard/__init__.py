"""Warden's pure policy engine: policies as data, permission resolution, `Guard.verify`,
PHI/secret detectors and redaction, and Ed25519-signed, hash-chained certificates.

Depends only on the standard library, `cryptography` and `rfc8785`; no I/O on the verify path.
"""

from guard.catalog import PERMISSIONS, TOOL_PERMISSIONS, TOOL_SPECS
from guard.policy import (
    POLICY_NAMES,
    Policy,
    Resolution,
    UnknownPolicy,
    canonical_name,
    load_policy,
    resolve_permissions,
)

__all__ = [
    "PERMISSIONS",
    "POLICY_NAMES",
    "TOOL_PERMISSIONS",
    "TOOL_SPECS",
    "Policy",
    "Resolution",
    "UnknownPolicy",
    "canonical_name",
    "load_policy",
    "resolve_permissions",
]
