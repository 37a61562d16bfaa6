"""Compliance policy documents as applied, by (name, version).

Policies ship as data files with the code (guard/policies/), so after an upgrade only the new
version is at hand. The worker that applies a version records its document here once per process,
and an audit package of an older execution embeds the recorded one.
"""

from __future__ import annotations

from typing import Any

from shared.db import Database, Json

_recorded: set[tuple[str, str, str]] = set()  # (database url, name, version) recorded by this process


def record(db: Database, name: str, version: str, document: dict[str, Any]) -> None:
    """Record a version's document (first writer wins: a version's document never changes)."""
    if (db.url, name, version) in _recorded:
        return
    db.execute("INSERT INTO policy_documents (name, version, document) VALUES (%s, %s, %s)"
               " ON CONFLICT (name, version) DO NOTHING", (name, version, Json(document)))
    _recorded.add((db.url, name, version))


def get(db: Database, name: str, version: str) -> dict[str, Any] | None:
    row = db.fetchone("SELECT document FROM policy_documents WHERE name = %s AND version = %s", (name, version))
    return row["document"] if row else None
