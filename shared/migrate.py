"""Numbered SQL migrations, applied once each under a PostgreSQL advisory lock.

Several processes may start at once (web, workers, a second host): the advisory lock makes the
first one apply what is missing while the others wait, then find nothing left to do. A file is
never edited once released; a change is a new file.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

log = logging.getLogger(__name__)

# An arbitrary constant: every Warden process agrees on it, nothing else uses it.
_LOCK_KEY = 0x5741524445


def migration_files() -> list[tuple[int, str, str]]:
    out = []
    for entry in resources.files("shared.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        out.append((version, name, entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers in {sorted(n for _, n, _ in out)}")
    return out


def create_database(admin_url: str, name: str) -> bool:
    """Create database ``name`` through ``admin_url`` (a database on the same server) unless it
    exists; True when this call created it."""
    conn = psycopg2.connect(admin_url, connect_timeout=10, application_name="warden-migrate")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is not None:
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.errors.DuplicateDatabase:
        return False  # another process made it first
    finally:
        conn.close()
    log.info("created database %s", name)
    return True


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` through ``admin_url`` (a database on the same server) if it exists;
    ``FORCE`` ends the sessions a stopped process left on it."""
    conn = psycopg2.connect(admin_url, connect_timeout=10, application_name="warden-migrate")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def ensure_database(database_url: str) -> str | None:
    """Create the database ``database_url`` names when its server is up but it does not exist yet
    (a fresh server named by DATABASE_URL for ``make run``); return its name when created."""
    try:
        psycopg2.connect(database_url, connect_timeout=10, application_name="warden-migrate").close()
        return None
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    params = psycopg2.extensions.parse_dsn(database_url)
    name = params.get("dbname")
    if not name:
        raise RuntimeError("DATABASE_URL names no database")
    admin_url = psycopg2.extensions.make_dsn(**{**params, "dbname": "postgres"})
    return name if create_database(admin_url, name) else None


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    applied: list[str] = []
    conn = psycopg2.connect(database_url, connect_timeout=10, application_name="warden-migrate")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in cur.fetchall()}
                for version, name, sql in migration_files():
                    if version in done:
                        continue
                    conn.autocommit = False
                    with conn.cursor() as tx:
                        tx.execute(sql)
                        tx.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                   (version, name))
                    conn.commit()
                    conn.autocommit = True
                    applied.append(name)
                    log.info("applied migration %s", name)
            finally:
                conn.autocommit = True
                cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    finally:
        conn.close()
    return applied
