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


# Decrypted keys by (secret, key id, encrypted seed): a stored key never changes, so each process
# decrypts it once. Configured keys are registered once per (database, key id) per process.
_decrypted: dict[tuple[str, str, str], SigningKey] = {}
_registered: set[tuple[str, str]] = set()


def key_for_run(db: Database, settings: Settings, stored: tuple[str, str] | None) -> SigningKey:
    """The key for a run that is starting, given the active generated key read with the run's
    first statement (runs.begin): no query of its own unless there is no generated key yet or a
    configured key is new to this process. A rotation takes effect for the next run."""
    if settings.signing_key:
        key = _decrypted.get(("", "configured", settings.signing_key)) or SigningKey.load(settings.signing_key)
        _decrypted[("", "configured", settings.signing_key)] = key
        if (db.url, key.key_id) not in _registered:
            signing_keys.register_configured(db, key.key_id, key.public_jwk()["x"])
            _registered.add((db.url, key.key_id))
        return key
    if stored is None:
        return active_key(db, settings)
    cache_key = (settings.secret_key, *stored)
    key = _decrypted.get(cache_key)
    if key is None:
        key = SigningKey.from_base64url(signing_keys.decrypt_seed(stored[1], settings.secret_key))
        _decrypted[cache_key] = key
    return key


def rotate(db: Database, settings: Settings) -> tuple[str | None, str]:
    """Retire the active generated key and make a new one: (old key id, new key id)."""
    new = SigningKey.generate()
    return signing_keys.rotate(db, settings.secret_key, _material(new)), new.key_id
