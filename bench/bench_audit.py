"""Audit package verification throughput: ``verify_entries_per_s`` over a synthetic package of
100,000 entries, 50,000 events and 50,000 certificates (target: 100k entries in under 60 s), built with
guard.audit itself and verified the way ``warden verify-audit`` does. Pure CPU, no services.

Also reports ``verify_audit_s`` (wall time for the whole package) and ``build_audit_s``.
"""

from __future__ import annotations

import time
from typing import Any

from guard import Decision, SigningKey, ToolCall, issue_certificate, load_policy
from guard.audit import build_package, verify_package

ENTRIES = 50_000  # events, and as many certificates: 100k entries in all


def synthetic_package(entries: int, key: SigningKey | None = None, *, execution_id: str = "exec_bench") -> bytes:
    """A valid package with ``entries`` events and ``entries`` certificates (plus a few violations)."""
    key = key or SigningKey.from_seed(bytes(range(32)))
    policy = load_policy("hipaa")
    decision = Decision(tool="list_documents", permission="fs:read", allowed=True,
                        checks=["tool_known", "arguments_valid", "permission"], violations=[], halt=False)
    call = ToolCall("list_documents", {})

    def certs() -> Any:
        prev = None
        for seq in range(1, entries + 1):
            cert = issue_certificate(key, certificate_id=f"cert_{seq:08d}", execution_id=execution_id, seq=seq,
                                     call=call, decision=decision, policy=policy,
                                     issued_at="2026-01-01T00:00:00Z", prev_hash=prev)
            prev = cert["hash"]
            yield cert

    events = ({"execution_id": execution_id, "seq": seq, "type": "tool.completed",
               "at": "2026-01-01T00:00:00+00:00", "data": {"call_id": f"c{seq}", "tool": "list_documents", "ok": True}}
              for seq in range(1, entries + 1))
    violations = ({"call_key": f"1:{i}", "tool": "send_email", "arguments_sha256": "0" * 64, "halted": False,
                   "violations": [{"rule": "phi_redaction", "reason": "unredacted_phi", "detail": "SSN"}],
                   "created_at": "2026-01-01T00:00:00+00:00"} for i in range(10))
    execution = {"execution_id": execution_id, "task": "synthetic", "status": "succeeded",
                 "compliance_policy": policy.name, "policy_version": policy.version}
    return build_package(execution=execution, events=events, certificates=certs(), violations=violations,
                         policy_document=policy.document, keys=[key.public_jwk()], signing_key=key,
                         created_at="2026-01-01T00:00:00Z")


def run(entries: int = ENTRIES) -> dict[str, Any]:
    start = time.perf_counter()
    package = synthetic_package(entries)
    built = time.perf_counter() - start
    start = time.perf_counter()
    report = verify_package(package)
    elapsed = time.perf_counter() - start
    if not report.ok:
        raise AssertionError(f"synthetic package did not verify: {report.problems[:3]}")
    verified = report.summary["entries"]
    return {"verify_entries_per_s": round(verified / elapsed, 1), "verify_audit_entries": verified,
            "verify_audit_s": round(elapsed, 2), "build_audit_s": round(built, 2),
            "audit_package_bytes": len(package)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else ENTRIES), indent=2))
