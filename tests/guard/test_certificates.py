"""Certificates: canonical JSON, signing, offline verification, and tamper detection."""

import copy
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization

from guard import (
    CERTIFICATE_FIELDS,
    SigningKey,
    ToolCall,
    VerifyContext,
    canonical_json,
    certificate_hash,
    issue_certificate,
    load_policy,
    public_jwk,
    verify,
    verify_certificate,
    verify_chain,
)
from guard.certificates import b64url_decode


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 8785 §3.2.2 / appendix examples
        ({"b": 2, "a": 1, "c": {"z": None, "y": [True, False]}}, b'{"a":1,"b":2,"c":{"y":[true,false],"z":null}}'),
        ([1e30, 4.5, 0.002, 1e-27, -0.0], b"[1e+30,4.5,0.002,1e-27,0]"),
        ({"\u20ac": "$", "\r": "\n", "1": "\u0080"}, '{"\\r":"\\n","1":"\u0080","\u20ac":"$"}'.encode()),
        ("\u00e9\u2028", '"\u00e9\u2028"'.encode()),
        ([333333333.33333329, 1e21, 1e20], b"[333333333.3333333,1e+21,100000000000000000000]"),
    ],
)
def test_canonical_json_vectors(value, expected):
    assert canonical_json(value) == expected


@pytest.fixture(scope="module")
def key():
    return SigningKey.from_seed(bytes(range(32)))


def issue_chain(key, n, execution_id="exec_1"):
    policy = load_policy("default")
    ctx = VerifyContext(execution_id, policy, policy.max_permissions, 1000)
    certs, prev = [], None
    for i in range(1, n + 1):
        call = ToolCall("read_document", {"document_id": f"doc_{i}"})
        decision = verify(call, ctx)
        cert = issue_certificate(
            key,
            certificate_id=f"cert_{i:04d}",
            execution_id=execution_id,
            seq=i,
            call=call,
            decision=decision,
            policy=policy,
            issued_at=f"2026-11-23T10:00:{i:02d}Z",
            prev_hash=prev,
        )
        certs.append(cert)
        prev = cert["hash"]
    return certs


def test_key_formats_and_key_id(key):
    assert key.key_id == "ed25519-" + hashlib.sha256(key.public_raw).hexdigest()[:16]
    assert SigningKey.from_base64url(key.seed_base64url()).key_id == key.key_id
    assert SigningKey.load(key.seed_base64url()).key_id == key.key_id
    assert SigningKey.load(bytes(range(32))).key_id == key.key_id
    pem = key._private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert SigningKey.from_pem(pem).key_id == key.key_id
    assert SigningKey.load(pem.decode()).key_id == key.key_id
    assert "seed" not in repr(key) and key.seed_base64url() not in repr(key)
    with pytest.raises(ValueError):
        SigningKey.from_seed(b"short")
    assert SigningKey.generate().key_id != key.key_id


def test_public_jwk(key):
    jwk = public_jwk(key.public_key)
    assert jwk == key.public_jwk() == public_jwk(key.public_raw)
    assert set(jwk) == {"kty", "crv", "kid", "x"}
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == key.key_id
    assert "=" not in jwk["x"] and b64url_decode(jwk["x"]) == key.public_raw


def test_certificate_shape_and_formulas(key):
    (cert,) = issue_chain(key, 1)
    assert list(cert) == list(CERTIFICATE_FIELDS)
    assert cert["prev_hash"] is None and cert["seq"] == 1
    assert cert["arguments_sha256"] == hashlib.sha256(b'{"document_id":"doc_1"}').hexdigest()
    body = {k: v for k, v in cert.items() if k not in ("hash", "signature")}
    assert cert["hash"] == hashlib.sha256(canonical_json(body)).hexdigest() == certificate_hash(cert)
    assert "=" not in cert["signature"]
    signed = canonical_json({k: v for k, v in cert.items() if k != "signature"})
    key.public_key.verify(b64url_decode(cert["signature"]), signed)  # raises if invalid
    assert cert["checks"][:4] == ["tool_known", "arguments_valid", "permission_held", "budget_available"]
    assert cert["policy"] == "default" and cert["policy_version"] == load_policy("default").version


def test_round_trip_through_json_with_only_the_public_jwk(key):
    certs = issue_chain(key, 5)
    jwks = json.loads(json.dumps({"keys": [key.public_jwk()]}))
    loaded = [json.loads(json.dumps(c)) for c in certs]
    assert all(verify_certificate(c, jwks["keys"]) == [] for c in loaded)
    assert verify_chain(loaded, jwks) == []
    assert verify_chain(loaded, jwks["keys"], head=certs[-1]["hash"]) == []


def test_refuses_to_certify_a_blocked_call(key):
    policy = load_policy("hipaa")
    ctx = VerifyContext("exec_1", policy, [], 1000)
    call = ToolCall("read_document", {"document_id": "d"})
    with pytest.raises(ValueError):
        issue_certificate(
            key,
            certificate_id="cert_1",
            execution_id="exec_1",
            seq=1,
            call=call,
            decision=verify(call, ctx),
            policy=policy,
            issued_at="2026-11-23T10:00:00Z",
            prev_hash=None,
        )


def codes(problems):
    return {(p.index, p.code) for p in problems}


@pytest.mark.parametrize(
    ("field", "value"),
    [("tool", "send_email"), ("seq", 9), ("checks", []), ("issued_at", "2020-01-01T00:00:00Z"), ("permission", "x")],
)
def test_edit_is_detected(key, field, value):
    certs = issue_chain(key, 3)
    certs[1][field] = value
    problems = verify_chain(certs, [key.public_jwk()])
    assert (1, "hash_mismatch") in codes(problems)
    assert verify_certificate(certs[1], [key.public_jwk()])[0].startswith("hash_mismatch")
    p = next(p for p in problems if p.code == "hash_mismatch")
    assert p.certificate_id == "cert_0002" and "cert_0002" in str(p)


def test_edit_with_recomputed_hash_breaks_signature_and_chain(key):
    certs = issue_chain(key, 3)
    certs[1]["tool"] = "send_email"
    certs[1]["hash"] = certificate_hash(certs[1])
    assert codes(verify_chain(certs, [key.public_jwk()])) == {(1, "bad_signature"), (2, "prev_hash_mismatch")}


def test_deletion_is_detected(key):
    certs = issue_chain(key, 4)
    del certs[1]
    got = codes(verify_chain(certs, [key.public_jwk()]))
    assert (1, "seq_mismatch") in got and (1, "prev_hash_mismatch") in got
    first_gone = issue_chain(key, 3)[1:]
    assert {(0, "seq_mismatch"), (0, "prev_hash_mismatch")} <= codes(verify_chain(first_gone, [key.public_jwk()]))


def test_truncation_needs_the_head(key):
    certs = issue_chain(key, 3)
    head = certs[-1]["hash"]
    assert verify_chain(certs[:2], [key.public_jwk()]) == []
    assert codes(verify_chain(certs[:2], [key.public_jwk()], head=head)) == {(1, "truncated")}


def test_reordering_is_detected(key):
    certs = issue_chain(key, 3)
    certs[0], certs[1] = certs[1], certs[0]
    got = codes(verify_chain(certs, [key.public_jwk()]))
    assert {(0, "seq_mismatch"), (0, "prev_hash_mismatch"), (1, "seq_mismatch"), (2, "prev_hash_mismatch")} <= got


def test_inserted_forgery_is_detected(key):
    certs = issue_chain(key, 3)
    forger = SigningKey.generate()
    forged = copy.deepcopy(issue_chain(forger, 2)[1])
    forged["prev_hash"] = certs[0]["hash"]
    certs.insert(1, forged)
    got = codes(verify_chain(certs, [key.public_jwk()]))
    assert (1, "unknown_key") in got
    assert (2, "seq_mismatch") in got and (2, "prev_hash_mismatch") in got
    # even claiming our key id, the signature does not verify
    forged["key_id"] = key.key_id
    forged["hash"] = certificate_hash(forged)
    assert (1, "bad_signature") in codes(verify_chain(certs, [key.public_jwk()]))


def test_rotation_keeps_old_certificates_valid(key):
    old = issue_chain(key, 2)
    new_key = SigningKey.generate()
    assert verify_chain(old, [new_key.public_jwk(), key.public_jwk()]) == []
    assert {p.code for p in verify_chain(old, [new_key.public_jwk()])} == {"unknown_key"}


def test_malformed_certificates(key):
    cert = issue_chain(key, 1)[0]
    assert verify_certificate({}, [key.public_jwk()])[0].startswith("missing_field")
    extra = dict(cert, note="hi")
    assert any(p.startswith("unexpected_field") for p in verify_certificate(extra, [key.public_jwk()]))
    bad_sig = dict(cert, signature="!!notbase64")
    assert any(p.startswith("bad_signature") for p in verify_certificate(bad_sig, [key.public_jwk()]))
    assert codes(verify_chain(["nope"], [key.public_jwk()])) == {(0, "malformed")}
    other = issue_chain(key, 2, execution_id="exec_2")
    mixed = [issue_chain(key, 1)[0], other[1]]
    assert (1, "execution_mismatch") in codes(verify_chain(mixed, [key.public_jwk()]))
