"""VerifiedCertificates: Ed25519-signed, hash-chained receipts for allowed tool calls.

Exactly as DESIGN §3:

- `hash` = SHA-256 hex of the RFC 8785 (JCS) canonical JSON of the certificate without `hash`
  and `signature`;
- `signature` = base64url (no padding) Ed25519 signature over the canonical JSON of the
  certificate without `signature` (so it covers `hash`);
- `prev_hash` = the previous certificate's `hash` in the same execution, null for the first;
- `arguments_sha256` = SHA-256 hex of the canonical JSON of the call's arguments.

Keys are published as JWKs (`{"kty": "OKP", "crv": "Ed25519", "kid", "x"}`) and a certificate
names its key by `key_id`, so old certificates keep verifying after a rotation as long as the
old public key stays listed. Verification needs only the public JWKs: no database, no network.
Ids and timestamps come from the caller, keeping this module free of clocks and randomness
(except `SigningKey.generate`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard.model import Decision, ToolCall
from guard.policy import Policy

CERTIFICATE_FIELDS: tuple[str, ...] = (
    "certificate_id",
    "execution_id",
    "seq",
    "tool",
    "arguments_sha256",
    "permission",
    "policy",
    "policy_version",
    "checks",
    "issued_at",
    "prev_hash",
    "hash",
    "key_id",
    "signature",
)


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 (JSON Canonicalization Scheme) bytes of `obj`."""
    return rfc8785.dumps(obj)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (raises ValueError on bad input)."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"invalid base64url: {exc}") from exc


def arguments_sha256(arguments: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of a tool call's arguments."""
    return sha256_hex(canonical_json(dict(arguments)))


def _public_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_for(public_raw: bytes) -> str:
    """Deterministic key id: `ed25519-` + the first 16 hex digits of SHA-256(raw public key)."""
    return "ed25519-" + hashlib.sha256(public_raw).hexdigest()[:16]


def public_jwk(public_key: Ed25519PublicKey | bytes) -> dict[str, str]:
    """The JWK of an Ed25519 public key (object or raw 32 bytes)."""
    raw = public_key if isinstance(public_key, bytes) else _public_raw(public_key)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return {"kty": "OKP", "crv": "Ed25519", "kid": key_id_for(raw), "x": b64url_encode(raw)}


class SigningKey:
    """An Ed25519 private key with its deterministic `key_id`."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.public_raw: bytes = _public_raw(self.public_key)
        self.key_id: str = key_id_for(self.public_raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """From the raw 32-byte private seed."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_base64url(cls, text: str) -> SigningKey:
        """From the base64url (padding optional) encoding of the 32-byte seed."""
        return cls.from_seed(b64url_decode(text.strip()))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> SigningKey:
        """From an unencrypted PKCS#8 PEM private key."""
        data = pem.encode() if isinstance(pem, str) else pem
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 private key")
        return cls(key)

    @classmethod
    def load(cls, value: str | bytes) -> SigningKey:
        """From whatever a setting holds: PEM text, a base64url seed, or 32 raw bytes."""
        if isinstance(value, bytes) and len(value) == 32:
            return cls.from_seed(value)
        text = value.decode() if isinstance(value, bytes) else value
        if "-----BEGIN" in text:
            return cls.from_pem(text)
        return cls.from_base64url(text)

    def seed_base64url(self) -> str:
        """The private seed as base64url (to store in configuration)."""
        raw = self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return b64url_encode(raw)

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.public_raw)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(key_id={self.key_id!r})"


def certificate_hash(cert: Mapping[str, Any]) -> str:
    """The `hash` a certificate must carry (over all fields but `hash` and `signature`)."""
    body = {k: v for k, v in cert.items() if k not in ("hash", "signature")}
    return sha256_hex(canonical_json(body))


def issue_certificate(
    signing_key: SigningKey,
    *,
    certificate_id: str,
    execution_id: str,
    seq: int,
    call: ToolCall,
    decision: Decision,
    policy: Policy,
    issued_at: str,
    prev_hash: str | None,
) -> dict[str, Any]:
    """Build and sign the certificate for an allowed call (`seq` is 1-based per execution).

    Raises ValueError when the decision did not allow the call: refused calls get violations,
    never certificates.
    """
    if not decision.allowed:
        raise ValueError("cannot certify a call the guard did not allow")
    if decision.tool != call.tool:
        raise ValueError("decision and call name different tools")
    cert: dict[str, Any] = {
        "certificate_id": certificate_id,
        "execution_id": execution_id,
        "seq": seq,
        "tool": call.tool,
        "arguments_sha256": arguments_sha256(call.arguments),
        "permission": decision.permission,
        "policy": policy.name,
        "policy_version": policy.version,
        "checks": list(decision.checks),
        "issued_at": issued_at,
        "prev_hash": prev_hash,
        "key_id": signing_key.key_id,
    }
    cert["hash"] = certificate_hash(cert)
    cert["signature"] = b64url_encode(signing_key.sign(canonical_json(cert)))
    return {field: cert[field] for field in CERTIFICATE_FIELDS}


def _keys(jwks: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Public keys by kid from a JWK list (or a `{"keys": [...]}` document); bad entries skipped."""
    entries = jwks.get("keys", ()) if isinstance(jwks, Mapping) else jwks
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in entries:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            raw = b64url_decode(str(jwk["x"]))
            key = Ed25519PublicKey.from_public_bytes(raw)
        except (KeyError, ValueError):
            continue
        keys[str(jwk.get("kid") or key_id_for(raw))] = key
    return keys


def _problems(cert: Any, keys: Mapping[str, Ed25519PublicKey]) -> list[tuple[str, str]]:
    if not isinstance(cert, Mapping):
        return [("malformed", "certificate is not a JSON object")]
    missing = [f for f in CERTIFICATE_FIELDS if f not in cert]
    extra = sorted(set(cert) - set(CERTIFICATE_FIELDS))
    out: list[tuple[str, str]] = []
    if missing:
        out.append(("missing_field", f"missing {', '.join(missing)}"))
    if extra:
        out.append(("unexpected_field", f"unexpected {', '.join(extra)}"))
    if missing:
        return out
    try:
        expected_hash = certificate_hash(cert)
        signed = canonical_json({k: v for k, v in cert.items() if k != "signature"})
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        return [*out, ("malformed", f"not canonicalisable JSON: {exc}")]
    if cert["hash"] != expected_hash:
        out.append(("hash_mismatch", "hash does not match the certificate's contents"))
    key = keys.get(cert["key_id"]) if isinstance(cert["key_id"], str) else None
    if key is None:
        out.append(("unknown_key", f"no public key with kid {cert['key_id']!r}"))
        return out
    try:
        signature = b64url_decode(cert["signature"]) if isinstance(cert["signature"], str) else b""
        key.verify(signature, signed)
    except (InvalidSignature, ValueError):
        out.append(("bad_signature", "Ed25519 signature does not verify"))
    return out


def verify_certificate(cert: Mapping[str, Any], jwks: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> list[str]:
    """Problems with one certificate (`"code: detail"` strings); empty means valid.

    Checks the exact field set, the `hash`, that `key_id` is among the JWKs, and the signature.
    Chain properties (`seq`, `prev_hash`) need the neighbours: see `verify_chain`.
    """
    return [f"{code}: {detail}" for code, detail in _problems(cert, _keys(jwks))]


@dataclass(frozen=True)
class Problem:
    """One problem found in a chain: which certificate (by position, id and seq) and what."""

    index: int
    certificate_id: str | None
    seq: int | None
    code: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "certificate_id": self.certificate_id,
            "seq": self.seq,
            "code": self.code,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        return f"certificate #{self.index} ({self.certificate_id}, seq {self.seq}): {self.code}: {self.detail}"


def verify_chain(
    certs: Sequence[Mapping[str, Any]],
    jwks: Iterable[Mapping[str, Any]] | Mapping[str, Any],
    *,
    head: str | None = None,
) -> list[Problem]:
    """Verify one execution's certificates in order; empty list means the chain is intact.

    Catches edits (hash / signature), forgeries (unknown key id, bad signature), deletions and
    insertions (seq not 1, 2, 3, ... and `prev_hash` not the previous `hash`), reordering (both),
    and certificates from another execution. Deleting the *last* certificates leaves a valid
    prefix; pass `head` (the last hash recorded elsewhere, e.g. an audit checkpoint) to catch that.
    """
    keys = _keys(jwks)
    problems: list[Problem] = []
    execution_id = certs[0].get("execution_id") if certs and isinstance(certs[0], Mapping) else None
    for index, cert in enumerate(certs):
        if not isinstance(cert, Mapping):
            problems.append(Problem(index, None, None, "malformed", "certificate is not a JSON object"))
            continue
        cid, seq = cert.get("certificate_id"), cert.get("seq")

        def add(code: str, detail: str, cid: Any = cid, seq: Any = seq, index: int = index) -> None:
            problems.append(Problem(index, cid, seq, code, detail))

        for code, detail in _problems(cert, keys):
            add(code, detail)
        if cert.get("execution_id") != execution_id:
            add("execution_mismatch", f"belongs to {cert.get('execution_id')!r}, not {execution_id!r}")
        if seq != index + 1:
            add("seq_mismatch", f"expected seq {index + 1}, found {seq!r}")
        prev = certs[index - 1] if index else None
        expected_prev = prev.get("hash") if isinstance(prev, Mapping) else None
        if cert.get("prev_hash") != expected_prev:
            add("prev_hash_mismatch", "prev_hash is not the previous certificate's hash")
    if head is not None:
        if not certs:
            problems.append(Problem(-1, None, None, "truncated", "no certificates but a head hash was given"))
        elif isinstance(certs[-1], Mapping) and certs[-1].get("hash") != head:
            last = certs[-1]
            problems.append(
                Problem(
                    len(certs) - 1,
                    last.get("certificate_id"),
                    last.get("seq"),
                    "truncated",
                    "the last certificate's hash is not the expected head (certificates missing at the end?)",
                )
            )
    return problems
