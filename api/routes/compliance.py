"""Compliance endpoints: the public keys that verify certificates."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.services import services
from guard import SigningKey, public_jwk
from guard.certificates import b64url_decode
from shared.store import signing_keys

bp = Blueprint("compliance", __name__)


@bp.get("/compliance/keys")
def keys() -> Response:
    """Public Ed25519 keys (JWK) for verifying certificates; retired keys stay listed.
    ---
    get:
      tags: [compliance]
      responses:
        200: {description: The key set, content: {application/json: {schema: KeySet}}}
        401: {description: Missing or invalid API key, content: {application/json: {schema: ErrorResponse}}}
    """
    svc = services()
    if svc.settings.signing_key:  # listed even before a worker has signed with it
        key = SigningKey.load(svc.settings.signing_key)
        signing_keys.register_configured(svc.db, key.key_id, key.public_jwk()["x"])
    out = []
    for row in signing_keys.public_keys(svc.db):
        jwk = public_jwk(b64url_decode(row["public_x"]))
        jwk["kid"] = row["key_id"]
        out.append(jwk)
    return jsonify({"keys": out})
