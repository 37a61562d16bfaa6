"""The worker's certificate signing key: configured, else generated once and stored."""

from __future__ import annotations

from guard import SigningKey
from shared.config import Settings
from shared.db import Database
from shared.store import signing_keys


def _material(key: SigningKey) -> signing_keys.KeyMaterial:
    return signing_keys.KeyMaterial(key.key_id, key.public_jwk()["x"], key.seed_base64url())


def active_key(db: Database, settings: Settings) -> SigningKey:
    """Read at the start of each run (one query), so a rotation takes effect for new runs."""
    if settings.signing_key:
        key = SigningKey.load(settings.signing_key)
        signing_keys.register_configured(db, key.key_id, key.public_jwk()["x"])
        return key
    material = signing_keys.active_generated(db, settings.secret_key, lambda: _material(SigningKey.generate()))
    return SigningKey.from_base64url(material.seed)


def rotate(db: Database, settings: Settings) -> tuple[str | None, str]:
    """Retire the active generated key and make a new one: (old key id, new key id)."""
    new = SigningKey.generate()
    return signing_keys.rotate(db, settings.secret_key, _material(new)), new.key_id
