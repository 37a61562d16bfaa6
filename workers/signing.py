"""The worker's certificate signing key: configured, else generated once and stored."""

from __future__ import annotations

from guard import SigningKey
from shared.config import Settings
from shared.db import Database
from shared.store import signing_keys


def _material(key: SigningKey) -> signing_keys.KeyMaterial:
    return signing_keys.KeyMaterial(key.key_id, key.public_jwk()["x"], key.seed_base64url())


# A stored or configured key never changes, so each process decodes it once: generated keys by
# (secret, key id, encrypted seed), configured ones by their value; a configured key is registered
# (its public half listed) once per database per process.
_generated: dict[tuple[str, str, str], SigningKey] = {}
_configured: dict[str, SigningKey] = {}
_registered: set[tuple[str, str]] = set()


def key_for_run(db: Database, settings: Settings, stored: tuple[str, str] | None) -> SigningKey:
    """The key for a run that is starting: the configured WARDEN_SIGNING_KEY, else the active
    generated key as read with the run's first statement (``stored``: key id and encrypted seed,
    from runs.begin), generated here when there is none yet. No query in the usual case; a
    rotation takes effect for the next run."""
    if settings.signing_key:
        key = _configured.get(settings.signing_key)
        if key is None:
            key = _configured[settings.signing_key] = SigningKey.load(settings.signing_key)
        if (db.url, key.key_id) not in _registered:
            signing_keys.register_configured(db, key.key_id, key.public_jwk()["x"])
            _registered.add((db.url, key.key_id))
        return key
    if stored is None:  # the first run of a fresh database: create (or read a racing creator's) key
        material = signing_keys.active_generated(db, settings.secret_key, lambda: _material(SigningKey.generate()))
        return SigningKey.from_base64url(material.seed)
    cache_key = (settings.secret_key, *stored)
    key = _generated.get(cache_key)
    if key is None:
        key = _generated[cache_key] = SigningKey.from_base64url(signing_keys.decrypt_seed(stored[1],
                                                                                          settings.secret_key))
    return key


def rotate(db: Database, settings: Settings) -> tuple[str | None, str]:
    """Retire the active generated key and make a new one: (old key id, new key id)."""
    new = SigningKey.generate()
    return signing_keys.rotate(db, settings.secret_key, _material(new)), new.key_id
