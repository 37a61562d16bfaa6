"""Audit packages, offline: a built package verifies, and every kind of tampering is caught and
located (file, line, what)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from bench.bench_audit import synthetic_package
from guard import SigningKey, canonical_json
from guard.audit import build_package, chain_hash, verify_package

KEY = SigningKey.from_seed(bytes(range(32)))


@pytest.fixture(scope="module")
def package() -> bytes:
    return synthetic_package(20, KEY, execution_id="exec_t")


def unpack(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def repack(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def lines(files: dict[str, bytes], name: str) -> list[dict]:
    return [json.loads(x) for x in files[name].splitlines()]


def put_lines(files: dict[str, bytes], name: str, items: list[dict]) -> None:
    files[name] = b"".join(canonical_json(i) + b"\n" for i in items)


def fix_manifest(files: dict[str, bytes]) -> None:
    """What a careful forger does: recompute the manifest (the signed checkpoint still disagrees)."""
    import hashlib

    manifest = json.loads(files["manifest.json"])
    for name in manifest["files"]:
        manifest["files"][name] = {"sha256": hashlib.sha256(files[name]).hexdigest(), "bytes": len(files[name])}
    files["manifest.json"] = json.dumps(manifest).encode()


def codes(report) -> set[tuple[str, int | None, str]]:
    return {(p.file, p.line, p.code) for p in report.problems}


def test_valid_package_verifies_with_progress(package: bytes) -> None:
    seen: list[tuple[int, int | None]] = []
    report = verify_package(package, progress=lambda done, total: seen.append((done, total)))
    assert report.ok, report.problems
    assert report.summary["certificates"] == 20 and report.summary["events"] == 20
    assert report.summary["entries"] == 50 and seen[-1] == (50, 50)
    assert verify_package(package, trusted_keys={"keys": [KEY.public_jwk()]}).ok


def test_edit_a_certificate_field(package: bytes) -> None:
    files = unpack(package)
    certs = lines(files, "certificates.jsonl")
    certs[4]["tool"] = "send_email"
    put_lines(files, "certificates.jsonl", certs)
    report = verify_package(repack(files))
    assert ("certificates.jsonl", 5, "hash_mismatch") in codes(report)
    assert ("certificates.jsonl", None, "manifest_hash_mismatch") in codes(report)
    assert any("seq 5" in str(p) for p in report.problems)


def test_edit_an_event_even_with_a_recomputed_manifest(package: bytes) -> None:
    files = unpack(package)
    events = lines(files, "events.jsonl")
    events[2]["data"]["ok"] = False
    put_lines(files, "events.jsonl", events)
    fix_manifest(files)
    report = verify_package(repack(files))
    found = codes(report)
    assert ("events.jsonl", 3, "chain_mismatch") in found
    assert ("events.jsonl", None, "checkpoint_hash_mismatch") in found
    assert not any(p.code == "manifest_hash_mismatch" for p in report.problems)


def test_event_rewritten_with_a_recomputed_chain_still_fails_the_signed_head(package: bytes) -> None:
    files = unpack(package)
    events = lines(files, "events.jsonl")
    events[2]["data"]["ok"] = False
    prev = None
    for e in events:
        e.pop("hash")
        prev = e["hash"] = chain_hash(prev, e)
    put_lines(files, "events.jsonl", events)
    fix_manifest(files)
    found = codes(verify_package(repack(files)))
    assert ("events.jsonl", None, "head_mismatch") in found


@pytest.mark.parametrize("name", ["certificates.jsonl", "events.jsonl"])
def test_delete_an_entry(package: bytes, name: str) -> None:
    files = unpack(package)
    items = lines(files, name)
    del items[7]
    put_lines(files, name, items)
    found = codes(verify_package(repack(files)))
    expected = "seq_mismatch"
    assert (name, 8, expected) in found
    assert (name, 8, "prev_hash_mismatch" if name.startswith("cert") else "chain_mismatch") in found


def test_insert_a_certificate(package: bytes) -> None:
    files = unpack(package)
    certs = lines(files, "certificates.jsonl")
    certs.insert(3, dict(certs[3], certificate_id="cert_forged"))
    put_lines(files, "certificates.jsonl", certs)
    found = codes(verify_package(repack(files)))
    assert ("certificates.jsonl", 5, "seq_mismatch") in found
    assert ("certificates.jsonl", 4, "hash_mismatch") in found


def test_insert_an_event(package: bytes) -> None:
    files = unpack(package)
    events = lines(files, "events.jsonl")
    events.insert(5, dict(events[5], type="tool.completed"))
    put_lines(files, "events.jsonl", events)
    found = codes(verify_package(repack(files)))
    assert ("events.jsonl", 7, "seq_mismatch") in found
    assert ("events.jsonl", None, "count_mismatch") in found


@pytest.mark.parametrize("name", ["certificates.jsonl", "events.jsonl"])
def test_reorder(package: bytes, name: str) -> None:
    files = unpack(package)
    items = lines(files, name)
    items[10], items[11] = items[11], items[10]
    put_lines(files, name, items)
    found = codes(verify_package(repack(files)))
    assert (name, 11, "seq_mismatch") in found and (name, 12, "seq_mismatch") in found


@pytest.mark.parametrize("name", ["certificates.jsonl", "events.jsonl", "violations.jsonl"])
def test_truncate_even_with_a_recomputed_manifest(package: bytes, name: str) -> None:
    files = unpack(package)
    items = lines(files, name)[:-2]
    put_lines(files, name, items)
    fix_manifest(files)
    report = verify_package(repack(files))
    assert (name, None, "truncated") in codes(report), report.problems


def test_swap_policy(package: bytes) -> None:
    from guard import load_policy

    files = unpack(package)
    files["policy.json"] = canonical_json(load_policy("default").document)
    fix_manifest(files)
    found = codes(verify_package(repack(files)))
    assert ("policy.json", None, "policy_mismatch") in found
    assert ("policy.json", None, "checkpoint_hash_mismatch") in found


def test_edit_the_manifest(package: bytes) -> None:
    files = unpack(package)
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["violations.jsonl"]["sha256"] = "0" * 64
    files["manifest.json"] = json.dumps(manifest).encode()
    assert ("violations.jsonl", None, "manifest_hash_mismatch") in codes(verify_package(repack(files)))


def test_forged_checkpoint_and_foreign_key(package: bytes) -> None:
    files = unpack(package)
    checkpoint = json.loads(files["checkpoint.json"])
    checkpoint["status"] = "blocked"
    files["checkpoint.json"] = canonical_json(checkpoint)
    fix_manifest(files)
    assert ("checkpoint.json", None, "bad_signature") in codes(verify_package(repack(files)))
    other = SigningKey.from_seed(bytes(32))
    found = codes(verify_package(package, trusted_keys=[other.public_jwk()]))
    assert ("checkpoint.json", None, "unknown_key") in found
    assert any(code == "unknown_key" and f == "certificates.jsonl" for f, _, code in found)


def test_missing_and_extra_files_and_garbage(package: bytes) -> None:
    files = unpack(package)
    del files["keys.json"]
    files["notes.txt"] = b"hi"
    found = codes(verify_package(repack(files)))
    assert ("keys.json", None, "missing_file") in found and ("notes.txt", None, "unexpected_file") in found
    assert ("(package)", None, "not_a_zip") in codes(verify_package(b"not a zip"))
    files = unpack(package)
    files["events.jsonl"] = files["events.jsonl"].replace(b"\n", b"\n\n", 1)
    assert ("events.jsonl", 2, "invalid_json") in codes(verify_package(repack(files)))


def test_builder_refuses_nothing_and_empty_logs_verify() -> None:
    data = build_package(execution={"execution_id": "exec_e", "status": "cancelled", "compliance_policy": "default",
                                    "policy_version": "1.0"}, events=[], certificates=[], violations=[],
                         policy_document={"name": "default", "version": "1.0"}, keys=[], signing_key=KEY,
                         created_at="2026-01-01T00:00:00Z")
    report = verify_package(data)
    assert report.ok, report.problems
