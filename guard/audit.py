"""Audit packages: build and verify the offline, tamper-evident record of a finished execution.

A package is a zip holding

- ``manifest.json``: format and version, algorithms, and the SHA-256 and size of every other file;
- ``execution.json``: the execution record as the API returns it;
- ``events.jsonl``, ``violations.jsonl``: one JSON object per line, each carrying ``hash`` =
  SHA-256 hex of the canonical JSON of ``{"prev": <previous line's hash or null>, "record":
  <the line without hash>}``, so an edited, deleted, inserted or moved line breaks the chain
  right there;
- ``certificates.jsonl``: the signed, hash-chained certificates (guard.certificates) in seq order;
- ``policy.json``: the policy document exactly as applied; ``keys.json``: the public JWKs needed;
- ``checkpoint.json``: counts and head hashes of the three logs and the SHA-256 of every other
  data file, signed (Ed25519, base64url, over the canonical JSON of the checkpoint without
  ``signature``) with the server's key. The signature is the anchor: rewriting a file and its
  manifest entry still fails the checkpoint; dropping the last entries of a log fails its count
  and head (truncation).

Canonical JSON is RFC 8785 throughout. Verification needs only the zip (and, to pin the signer,
the server's published keys): no database, no network. Logs are streamed line by line.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.certificates import SigningKey, b64url_decode, b64url_encode, canonical_json, verify_chain

FORMAT = "warden-audit-package"
FORMAT_VERSION = 1
ALGORITHMS = {"file_hash": "sha256", "log_chain": "sha256(jcs({prev, record}))", "certificate_hash": "sha256(jcs)",
              "signature": "Ed25519", "canonicalization": "RFC 8785 (JCS)"}
LOGS = ("events.jsonl", "certificates.jsonl", "violations.jsonl")
DATA_FILES = ("execution.json", *LOGS, "policy.json", "keys.json")
FILES = ("manifest.json", *DATA_FILES, "checkpoint.json")
TERMINAL = frozenset({"succeeded", "blocked", "error", "cancelled"})

Progress = Callable[[int, int | None], None]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chain_hash(prev: str | None, record: Mapping[str, Any]) -> str:
    """The ``hash`` of one log line: over the previous line's hash and the line without ``hash``."""
    return _sha256(canonical_json({"prev": prev, "record": dict(record)}))


def _chained_lines(records: Iterable[Mapping[str, Any]]) -> tuple[bytes, int, str | None]:
    out, prev, count = io.BytesIO(), None, 0
    for record in records:
        body = {k: v for k, v in record.items() if k != "hash"}
        prev = chain_hash(prev, body)
        out.write(canonical_json({**body, "hash": prev}) + b"\n")
        count += 1
    return out.getvalue(), count, prev


def build_package(*, execution: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                  certificates: Iterable[Mapping[str, Any]], violations: Iterable[Mapping[str, Any]],
                  policy_document: Mapping[str, Any], keys: Sequence[Mapping[str, Any]],
                  signing_key: SigningKey, created_at: str) -> bytes:
    """The zip bytes of an audit package. ``keys`` are the public JWKs the certificates name;
    the checkpoint signer's key is added when missing. Records must be JSON (str keys, no NaN)."""
    files: dict[str, bytes] = {}
    execution_id = execution.get("execution_id")
    files["execution.json"] = canonical_json(dict(execution))
    files["events.jsonl"], n_events, events_head = _chained_lines(events)
    cert_buf, n_certs, cert_head = io.BytesIO(), 0, None
    for cert in certificates:
        cert_buf.write(canonical_json(dict(cert)) + b"\n")
        n_certs, cert_head = n_certs + 1, cert.get("hash")
    files["certificates.jsonl"] = cert_buf.getvalue()
    files["violations.jsonl"], n_viol, viol_head = _chained_lines(violations)
    files["policy.json"] = canonical_json(dict(policy_document))
    jwks = [dict(k) for k in keys]
    if signing_key.key_id not in {k.get("kid") for k in jwks}:
        jwks.append(signing_key.public_jwk())
    files["keys.json"] = canonical_json({"keys": jwks})
    checkpoint: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "execution_id": execution_id,
        "status": execution.get("status"), "created_at": created_at,
        "certificates": {"count": n_certs, "head": cert_head},
        "events": {"count": n_events, "head": events_head},
        "violations": {"count": n_viol, "head": viol_head},
        "files": {name: _sha256(files[name]) for name in DATA_FILES},
        "key_id": signing_key.key_id,
    }
    checkpoint["signature"] = b64url_encode(signing_key.sign(canonical_json(checkpoint)))
    files["checkpoint.json"] = canonical_json(checkpoint)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "execution", "execution_id": execution_id,
        "created_at": created_at, "algorithms": ALGORITHMS,
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()},
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name in FILES[1:]:
            zf.writestr(name, files[name])
    return out.getvalue()


# --- verification ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditProblem:
    """One problem: which file, where in it (line number, or None for the whole file), what."""

    file: str
    line: int | None
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}{f' line {self.line}' if self.line is not None else ''}: {self.code}: {self.detail}"


@dataclass
class Report:
    """The outcome: ``ok`` only when nothing at all is wrong; ``summary`` says what was checked."""

    problems: list[AuditProblem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str, line: int | None, code: str, detail: str) -> None:
        self.problems.append(AuditProblem(file, line, code, detail))


class _Counter:
    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def tick(self, step: int = 1, *, force: bool = False) -> None:
        self.done += step
        if self.progress is not None and (force or self.done % 1000 == 0):
            self.progress(self.done, self.total)


def _lines(zf: zipfile.ZipFile, name: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or _BAD) per line, streamed; a blank line is a (bad) entry too."""
    with zf.open(name) as raw:
        for number, line in enumerate(raw, start=1):
            try:
                yield number, json.loads(line)
            except (ValueError, UnicodeDecodeError):
                yield number, _BAD


_BAD = object()


class _StreamedCertificates(Sequence[Any]):
    """A read-once view of certificates.jsonl that ``verify_chain`` can walk without the whole
    chain in memory: iteration streams, the neighbours it looks back at are kept, and any other
    index is found by re-reading (correct, only slow; verify_chain does not need it)."""

    def __init__(self, zf: zipfile.ZipFile, report: Report, counter: _Counter, on_cert: Callable[[int, Any], None]):
        self._zf, self._report, self._counter, self._on_cert = zf, report, counter, on_cert
        with zf.open("certificates.jsonl") as raw:  # count lines without parsing them
            self._len = sum(1 for _ in raw)
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Any]:
        for index, (number, cert) in enumerate(_lines(self._zf, "certificates.jsonl")):
            if cert is _BAD:
                self._report.add("certificates.jsonl", number, "invalid_json", "not a JSON object")
                cert = None
            self._cache = {k: v for k, v in self._cache.items() if k in (0, index - 1)}
            self._cache[index] = cert
            self._on_cert(number, cert)
            self._counter.tick()
            yield cert

    def __getitem__(self, index: Any) -> Any:  # type: ignore[override]
        if index < 0:
            index += self._len
        if index in self._cache:
            return self._cache[index]
        if not 0 <= index < self._len:
            raise IndexError(index)
        for i, (_, cert) in enumerate(_lines(self._zf, "certificates.jsonl")):
            if i == index:
                return None if cert is _BAD else cert
        raise IndexError(index)


def _open(source: str | Path | bytes | IO[bytes]) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)


def _read_json(zf: zipfile.ZipFile, name: str, report: Report) -> Any:
    try:
        return json.loads(zf.read(name))
    except KeyError:  # reported as missing already
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        report.add(name, None, "invalid_json", str(exc))
        return None


def verify_package(source: str | Path | bytes | IO[bytes], *, progress: Progress | None = None,
                   trusted_keys: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None) -> Report:
    """Verify an audit package; the Report names every problem found (file, line, what).

    ``trusted_keys`` (JWKs, e.g. from GET /api/v1/compliance/keys) pins the signer: without it the
    package's own keys.json is used, which proves integrity but not who signed.
    """
    return run_verifier(_verify, source, progress, trusted_keys)


def run_verifier(verify: Callable[..., None], source: Any, progress: Progress | None, trusted_keys: Any) -> Report:
    """Open the package and run ``verify`` on it; a file that is not a zip is the one problem."""
    report = Report()
    try:
        zf = _open(source)
    except (zipfile.BadZipFile, OSError) as exc:
        report.add("(package)", None, "not_a_zip", str(exc))
        return report
    with zf:
        verify(zf, report, progress, trusted_keys)
    return report


def _verify(zf: zipfile.ZipFile, report: Report, progress: Progress | None, trusted_keys: Any) -> None:
    names = set(zf.namelist())
    for name in FILES:
        if name not in names:
            report.add(name, None, "missing_file", "required file is not in the package")
    for name in sorted(names - set(FILES)):
        report.add(name, None, "unexpected_file", "not part of the package format")
    actual = {}
    for name in sorted(names & set(FILES)):
        h = hashlib.sha256()
        with zf.open(name) as f:
            while block := f.read(1 << 20):
                h.update(block)
        actual[name] = h.hexdigest()
    manifest = _read_json(zf, "manifest.json", report) or {}
    if manifest and (manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION):
        report.add("manifest.json", None, "unsupported_format",
                   f"format {manifest.get('format')!r} version {manifest.get('format_version')!r}")
    listed: dict[str, Any] = v if isinstance(v := manifest.get("files"), dict) else {}
    for name in FILES[1:]:
        entry = listed.get(name)
        if not isinstance(entry, dict):
            if manifest:
                report.add("manifest.json", None, "unlisted_file", f"{name} is not listed")
        elif name in actual and entry.get("sha256") != actual[name]:
            report.add(name, None, "manifest_hash_mismatch", "contents differ from the SHA-256 in manifest.json")
    keys_doc = _read_json(zf, "keys.json", report) or {}
    package_keys = keys_doc.get("keys", []) if isinstance(keys_doc, dict) else []
    jwks = _jwk_list(trusted_keys if trusted_keys is not None else package_keys)
    checkpoint = _read_json(zf, "checkpoint.json", report) or {}
    _verify_checkpoint(checkpoint, jwks, actual, report, trusted_keys is not None)
    execution = _read_json(zf, "execution.json", report) or {}
    execution_id = execution.get("execution_id")
    if checkpoint and execution_id != checkpoint.get("execution_id"):
        report.add("execution.json", None, "execution_mismatch", "execution_id differs from the checkpoint's")
    if execution and execution.get("status") not in TERMINAL:
        report.add("execution.json", None, "not_finished", f"status {execution.get('status')!r} is not terminal")
    policy = _read_json(zf, "policy.json", report) or {}
    if execution and policy and (policy.get("name"), str(policy.get("version"))) != (
            execution.get("compliance_policy"), str(execution.get("policy_version"))):
        report.add("policy.json", None, "policy_mismatch",
                   f"policy {policy.get('name')!r} v{policy.get('version')} is not the one the execution recorded "
                   f"({execution.get('compliance_policy')!r} v{execution.get('policy_version')})")

    def section(name: str) -> dict[str, Any]:
        return v if isinstance(v := checkpoint.get(name.split(".")[0]), dict) else {}
    total = sum(int(section(n).get("count") or 0) for n in LOGS) or None
    counter = _Counter(progress, total)
    summary = report.summary
    summary.update(execution_id=execution_id, status=execution.get("status"),
                   policy=f"{policy.get('name')} v{policy.get('version')}", signed_by=checkpoint.get("key_id"),
                   signer_pinned=trusted_keys is not None)
    if "certificates.jsonl" in names:
        summary["certificates"] = _verify_certificates(zf, report, jwks, counter, section("certificates"),
                                                       execution_id, policy)
    for name in ("events.jsonl", "violations.jsonl"):
        if name in names:
            summary[name.split(".")[0]] = _verify_log(zf, name, report, counter, section(name), execution_id)
    counter.tick(0, force=True)
    summary["entries"] = counter.done


def _jwk_list(keys: Any) -> list[dict[str, Any]]:
    entries = keys.get("keys", []) if isinstance(keys, Mapping) else keys
    return [dict(k) for k in entries if isinstance(k, Mapping)] if isinstance(entries, Iterable) else []


def _verify_checkpoint(checkpoint: Mapping[str, Any], jwks: list[dict[str, Any]], actual: Mapping[str, str],
                       report: Report, pinned: bool) -> None:
    if not checkpoint:
        return
    jwk = next((k for k in jwks if k.get("kid") == checkpoint.get("key_id") and k.get("crv") == "Ed25519"), None)
    if jwk is None:
        where = "the trusted keys" if pinned else "keys.json"
        report.add("checkpoint.json", None, "unknown_key",
                   f"signing key {checkpoint.get('key_id')!r} is not in {where}")
    else:
        try:
            key = Ed25519PublicKey.from_public_bytes(b64url_decode(str(jwk.get("x", ""))))
            signed = canonical_json({k: v for k, v in checkpoint.items() if k != "signature"})
            key.verify(b64url_decode(str(checkpoint.get("signature", ""))), signed)
        except Exception:  # InvalidSignature, bad base64, non-canonicalisable JSON: all mean "not signed"
            report.add("checkpoint.json", None, "bad_signature", "the checkpoint's Ed25519 signature does not verify")
    files: dict[str, Any] = v if isinstance(v := checkpoint.get("files"), dict) else {}
    for name in DATA_FILES:
        if name in actual and files.get(name) != actual[name]:
            report.add(name, None, "checkpoint_hash_mismatch",
                       "contents differ from the SHA-256 in the signed checkpoint")


def _verify_certificates(zf: zipfile.ZipFile, report: Report, jwks: list[dict[str, Any]], counter: _Counter,
                         expected: Mapping[str, Any], execution_id: Any, policy: Mapping[str, Any]) -> int:
    name = "certificates.jsonl"

    def on_cert(number: int, cert: Any) -> None:
        if not isinstance(cert, dict):
            return
        if cert.get("execution_id") != execution_id:
            report.add(name, number, "execution_mismatch", f"certificate belongs to {cert.get('execution_id')!r}")
        applied = (policy.get("name"), str(policy.get("version")))
        if policy and (cert.get("policy"), cert.get("policy_version")) != applied:
            report.add(name, number, "policy_mismatch",
                       f"issued under {cert.get('policy')!r} v{cert.get('policy_version')}, not policy.json's")

    certs = _StreamedCertificates(zf, report, counter, on_cert)
    head = expected.get("head") if expected.get("count") else None
    for p in verify_chain(certs, jwks, head=head):
        line = p.index + 1 if p.index >= 0 else None
        where = f"certificate {p.certificate_id} (seq {p.seq})" if p.certificate_id else "certificate"
        report.add(name, line, p.code, f"{where}: {p.detail}")
    _check_count(report, name, len(certs), expected, "certificates")
    return len(certs)


def _check_count(report: Report, name: str, found: int, expected: Mapping[str, Any], what: str) -> bool:
    """Count against the checkpoint: fewer entries and an otherwise intact prefix is truncation."""
    if not expected or expected.get("count") == found:
        return False
    damaged = any(p.file == name and p.line is not None and p.code != "truncated" for p in report.problems)
    code = "truncated" if found < (expected.get("count") or 0) and not damaged else "count_mismatch"
    report.add(name, None, code, f"{found} {what}, the checkpoint records {expected.get('count')}")
    return True


def _verify_log(zf: zipfile.ZipFile, name: str, report: Report, counter: _Counter, expected: Mapping[str, Any],
                execution_id: Any) -> int:
    prev: str | None = None
    count = 0
    is_events = name == "events.jsonl"
    for number, record in _lines(zf, name):
        count += 1
        counter.tick()
        if not isinstance(record, dict):
            report.add(name, number, "invalid_json", "not a JSON object")
            prev = None
            continue
        stored = record.pop("hash", None)
        try:
            computed = chain_hash(prev, record)
        except (TypeError, ValueError) as exc:
            report.add(name, number, "malformed", f"not canonicalisable JSON: {exc}")
            computed = None
        if stored != computed:
            what = f"event seq {record.get('seq')}" if is_events else f"entry {count}"
            report.add(name, number, "chain_mismatch",
                       f"{what}: hash does not match its contents and the line before it "
                       "(edited, or a line before it was deleted, inserted or moved)")
        prev = stored if isinstance(stored, str) else computed
        if is_events:
            if record.get("seq") != count:
                report.add(name, number, "seq_mismatch", f"expected event seq {count}, found {record.get('seq')!r}")
            if record.get("execution_id") != execution_id:
                report.add(name, number, "execution_mismatch", f"event belongs to {record.get('execution_id')!r}")
    if expected and not _check_count(report, name, count, expected, "entries") and expected.get("head") != prev:
        report.add(name, None, "head_mismatch", "the last entry's hash is not the checkpoint's head")
    return count


__all__ = ["FORMAT", "FORMAT_VERSION", "AuditProblem", "Report", "build_package", "chain_hash", "verify_package"]
