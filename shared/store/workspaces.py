"""Workspaces and API keys.

Key format: ``wdn_<prefix>_<secret>``. Only the prefix (for lookup) and the SHA-256 of the
whole key are stored; the plain key is shown once and never stored or logged. SHA-256 rather
than a slow password hash: keys carry 190 bits of randomness, so brute force is not the threat,
and a per-request bcrypt would dominate the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from shared.db import Database
from shared.ids import new_id


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    workspace_id: str
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the workspace and the key id (never the key itself)."""

    workspace_id: str
    key_id: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_workspace(db: Database, name: str) -> Workspace:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO workspaces (id, name, webhook_secret) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id, name, created_at",
            (new_id("ws"), name, "whsec_" + secrets.token_urlsafe(32)),
        )
        row = cur.fetchone()
    return Workspace(**row)


def create_key(db: Database, workspace_id: str, *, name: str | None = None, plain: str | None = None) -> str:
    """Create a key and return it in plain text (the only time it exists in plain text).

    ``plain`` lets the dev stack provision a known key (WARDEN_DEV_API_KEY); it must still
    look like a key of ours so that lookups by prefix work.
    """
    if plain is None:
        plain = f"wdn_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    prefix = key_prefix(plain)
    if prefix is None:
        raise ValueError("an API key must look like wdn_<prefix>_<secret>")
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO api_keys (id, workspace_id, prefix, key_hash, name) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (prefix) DO NOTHING",
            (new_id("key"), workspace_id, prefix, _hash(plain), name),
        )
    return plain


def key_prefix(plain: str) -> str | None:
    parts = plain.split("_", 2)
    if len(parts) != 3 or parts[0] != "wdn" or not parts[1] or len(parts[2]) < 16:
        return None
    return parts[1]


def authenticate(db: Database, plain: str) -> Principal | None:
    prefix = key_prefix(plain)
    if prefix is None:
        return None
    row = db.fetchone(
        "SELECT id, workspace_id, key_hash FROM api_keys WHERE prefix = %s AND revoked_at IS NULL", (prefix,))
    if row is None or not hmac.compare_digest(row["key_hash"], _hash(plain)):
        return None
    return Principal(workspace_id=row["workspace_id"], key_id=row["id"])


def key_active(db: Database, key_id: str) -> bool:
    """Whether the key with this id exists and is not revoked."""
    return db.fetchone("SELECT 1 AS ok FROM api_keys WHERE id = %s AND revoked_at IS NULL", (key_id,)) is not None


def revoke_key(db: Database, plain_or_prefix: str) -> bool:
    prefix = key_prefix(plain_or_prefix) or plain_or_prefix
    return db.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL",
                      (prefix,)) > 0


def webhook_secret(db: Database, workspace_id: str) -> str:
    row = db.fetchone("SELECT webhook_secret FROM workspaces WHERE id = %s", (workspace_id,))
    if row is None:
        raise LookupError(workspace_id)
    return str(row["webhook_secret"])


def set_max_running(db: Database, name: str, limit: int | None) -> bool:
    """Cap (or, with None, uncap) a workspace's running executions; False when there is no such
    workspace. Runs beyond the cap wait ``queued`` (shared/store/runs.begin): nothing is refused."""
    if limit is not None and limit < 1:
        raise ValueError("max_running_executions must be at least 1")
    return db.execute("UPDATE workspaces SET max_running_executions = %s WHERE name = %s", (limit, name)) == 1


def executions_by_workspace(db: Database) -> list[dict[str, object]]:
    """Running and queued executions per workspace with any (for /metrics), and each one's cap."""
    return db.fetchall("""
SELECT w.name, c.running, c.queued, w.max_running_executions AS cap
  FROM (SELECT workspace_id, count(*) FILTER (WHERE status = 'running') AS running,
               count(*) FILTER (WHERE status = 'queued') AS queued
          FROM executions WHERE status IN ('queued', 'running') GROUP BY workspace_id) c
  JOIN workspaces w ON w.id = c.workspace_id""")
