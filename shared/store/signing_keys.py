"""Certificate signing keys as stored rows (the Ed25519 objects live in guard/, callers convert).

A configured ``WARDEN_SIGNING_KEY`` is recorded with its public half only, so it is listed.
Otherwise a key is generated on first use and stored with its seed encrypted (Fernet, key
derived from ``WARDEN_SECRET_KEY``). Generation is race-safe across processes: a partial unique
index allows one active generated key and the loser of a concurrent insert reads the winner's.
Rotation retires the active key (its public half stays listed) and stores a new one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from shared.db import Database


@dataclass(frozen=True)
class KeyMaterial:
    key_id: str
    public_x: str  # base64url raw public key
    seed: str  # base64url raw private seed


def _fernet(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"warden-signing-key:" + secret_key.encode()).digest()))


def register_configured(db: Database, key_id: str, public_x: str) -> None:
    db.execute("INSERT INTO signing_keys (key_id, public_x, source) VALUES (%s, %s, 'configured')"
               " ON CONFLICT (key_id) DO NOTHING", (key_id, public_x))


def _insert_generated(cur: Any, new: KeyMaterial, secret_key: str) -> bool:
    token = _fernet(secret_key).encrypt(new.seed.encode()).decode()
    # ON CONFLICT on the one-active index: a concurrent generator won; the caller reads its key.
    cur.execute("INSERT INTO signing_keys (key_id, public_x, encrypted_seed, source)"
                " VALUES (%s, %s, %s, 'generated') ON CONFLICT DO NOTHING RETURNING key_id",
                (new.key_id, new.public_x, token))
    return cur.fetchone() is not None


def active_generated(db: Database, secret_key: str, generate: Callable[[], KeyMaterial]) -> KeyMaterial:
    """The active generated key, creating one (via ``generate``) when there is none."""
    select = ("SELECT key_id, public_x, encrypted_seed FROM signing_keys"
              " WHERE retired_at IS NULL AND source = 'generated'")
    with db.transaction() as cur:
        cur.execute(select)
        row = cur.fetchone()
        if row is None:
            new = generate()
            if _insert_generated(cur, new, secret_key):
                return new
            cur.execute(select)
            row = cur.fetchone()
    return KeyMaterial(row["key_id"], row["public_x"], decrypt_seed(row["encrypted_seed"], secret_key))


def decrypt_seed(encrypted_seed: str, secret_key: str) -> str:
    try:
        return _fernet(secret_key).decrypt(encrypted_seed.encode()).decode()
    except InvalidToken:
        raise RuntimeError("the stored signing key cannot be decrypted: did WARDEN_SECRET_KEY change?") from None


def rotate(db: Database, secret_key: str, new: KeyMaterial) -> str | None:
    """Retire the active generated key and store ``new``; returns the retired key id."""
    with db.transaction() as cur:
        # Row lock on the active key serialises two concurrent rotations.
        cur.execute("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL AND source = 'generated'"
                    " RETURNING key_id")
        old = cur.fetchone()
        if not _insert_generated(cur, new, secret_key):
            raise RuntimeError("another rotation is in progress")
    return old["key_id"] if old else None


def public_keys(db: Database) -> list[dict[str, Any]]:
    """Every key that was ever active (retired ones too), oldest first."""
    return db.fetchall("SELECT key_id, public_x, source, created_at, retired_at FROM signing_keys"
                       " ORDER BY created_at, key_id")
