"""Workflow audit packages: one zip holding the workflow record, its hash-chained event log and
every started stage's execution package (``stages/<name>.zip``, the format of guard/audit.py),
under one signed checkpoint that lists each file's SHA-256 (so a stage package cannot be swapped,
dropped or added) and the count and head of the workflow event log.

``verify_any`` reads the manifest's ``kind`` and verifies either kind of package.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from guard.audit import (
    ALGORITHMS,
    FORMAT,
    FORMAT_VERSION,
    Progress,
    Report,
    _chained_lines,
    _Counter,
    _jwk_list,
    _read_json,
    _verify_checkpoint,
    _verify_log,
    run_verifier,
    verify_package,
)
from guard.certificates import SigningKey, b64url_encode, canonical_json

EVENTS = "workflow_events.jsonl"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def build_workflow_package(*, workflow: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                           stage_packages: Mapping[str, bytes], signing_key: SigningKey, created_at: str) -> bytes:
    """The zip bytes; ``stage_packages`` maps a stage name to its execution package bytes."""
    files: dict[str, bytes] = {"workflow.json": canonical_json(dict(workflow))}
    files[EVENTS], n_events, head = _chained_lines(events)
    for name, data in sorted(stage_packages.items()):
        files[f"stages/{name}.zip"] = data
    files["keys.json"] = canonical_json({"keys": [signing_key.public_jwk()]})
    checkpoint: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "workflow",
        "workflow_id": workflow.get("workflow_id"), "status": workflow.get("status"), "created_at": created_at,
        "events": {"count": n_events, "head": head},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        "key_id": signing_key.key_id,
    }
    checkpoint["signature"] = b64url_encode(signing_key.sign(canonical_json(checkpoint)))
    files["checkpoint.json"] = canonical_json(checkpoint)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "workflow",
                "workflow_id": workflow.get("workflow_id"), "created_at": created_at, "algorithms": ALGORITHMS,
                "files": {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name, data in files.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_STORED if name.endswith(".zip") else None)
    return out.getvalue()


def verify_any(source: str | Path | bytes | IO[bytes], *, progress: Progress | None = None,
               trusted_keys: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None) -> Report:
    """Verify an execution or a workflow audit package, whichever ``source`` is."""
    data = source if isinstance(source, bytes | bytearray) else Path(source).read_bytes() \
        if isinstance(source, str | Path) else source.read()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            kind = json.loads(zf.read("manifest.json")).get("kind")
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError):
        kind = None
    if kind == "workflow":
        return verify_workflow_package(data, progress=progress, trusted_keys=trusted_keys)
    return verify_package(data, progress=progress, trusted_keys=trusted_keys)


def verify_workflow_package(source: str | Path | bytes | IO[bytes], *, progress: Progress | None = None,
                            trusted_keys: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None) -> Report:
    return run_verifier(_verify, source, progress, trusted_keys)


def _verify(zf: zipfile.ZipFile, report: Report, progress: Progress | None, trusted_keys: Any) -> None:
    names = set(zf.namelist())
    actual = {n: hashlib.sha256(zf.read(n)).hexdigest() for n in names}
    for required in ("manifest.json", "workflow.json", EVENTS, "keys.json", "checkpoint.json"):
        if required not in names:
            report.add(required, None, "missing_file", "required file is not in the package")
    manifest = _read_json(zf, "manifest.json", report) or {}
    listed: dict[str, Any] = v if isinstance(v := manifest.get("files"), dict) else {}
    for name in sorted(names - {"manifest.json"}):
        entry = listed.get(name)
        if not isinstance(entry, dict):
            report.add(name, None, "unlisted_file", "not listed in manifest.json")
        elif entry.get("sha256") != actual[name]:
            report.add(name, None, "manifest_hash_mismatch", "contents differ from the SHA-256 in manifest.json")
    keys_doc = _read_json(zf, "keys.json", report) or {}
    jwks = _jwk_list(trusted_keys if trusted_keys is not None else keys_doc.get("keys", []))
    checkpoint = _read_json(zf, "checkpoint.json", report) or {}
    _verify_checkpoint(checkpoint, jwks, {}, report, trusted_keys is not None)  # the signature
    signed_files: dict[str, Any] = v if isinstance(v := checkpoint.get("files"), dict) else {}
    for name in sorted((names | set(signed_files)) - {"manifest.json", "checkpoint.json"}):
        if name not in names:
            report.add(name, None, "missing_file", "listed in the signed checkpoint but not in the package")
        elif signed_files.get(name) != actual[name]:
            report.add(name, None, "checkpoint_hash_mismatch",
                       "not in the signed checkpoint" if name not in signed_files else
                       "contents differ from the SHA-256 in the signed checkpoint")
    workflow = _read_json(zf, "workflow.json", report) or {}
    if workflow.get("workflow_id") != checkpoint.get("workflow_id"):
        report.add("workflow.json", None, "workflow_mismatch", "workflow_id differs from the checkpoint's")
    if workflow and workflow.get("status") not in TERMINAL:
        report.add("workflow.json", None, "not_finished", f"status {workflow.get('status')!r} is not terminal")
    counter = _Counter(progress, None)
    if EVENTS in names:
        expected: dict[str, Any] = v if isinstance(v := checkpoint.get("events"), dict) else {}
        _verify_log(zf, EVENTS, report, counter, expected, None)
    stages = {str(s.get("name")): s for s in workflow.get("stages", []) if isinstance(s, dict)}
    summary: dict[str, Any] = {"kind": "workflow", "workflow_id": workflow.get("workflow_id"),
                               "status": workflow.get("status"), "signed_by": checkpoint.get("key_id"),
                               "signer_pinned": trusted_keys is not None, "stages": {}}
    for name, s in stages.items():
        member = f"stages/{name}.zip"
        if s.get("execution_id") and member not in names:
            report.add(member, None, "missing_file", f"stage {name!r} ran ({s['execution_id']}) but has no package")
        if member not in names:
            continue
        inner = verify_package(zf.read(member), trusted_keys=trusted_keys)
        for p in inner.problems:
            report.add(f"{member}/{p.file}", p.line, p.code, p.detail)
        if inner.summary.get("execution_id") != s.get("execution_id"):
            report.add(member, None, "execution_mismatch", f"package is for {inner.summary.get('execution_id')!r}, "
                                                           f"stage {name!r} ran {s.get('execution_id')!r}")
        summary["stages"][name] = {k: inner.summary.get(k) for k in ("execution_id", "status", "certificates",
                                                                     "events", "violations")}
        counter.done += int(inner.summary.get("entries") or 0)
    for member in sorted(n for n in names if n.startswith("stages/") and n[7:-4] not in set(stages)):
        report.add(member, None, "unexpected_file", "no stage of that name in workflow.json")
    counter.tick(0, force=True)
    summary["entries"] = counter.done
    report.summary = summary
