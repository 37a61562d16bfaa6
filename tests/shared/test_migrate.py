"""Migrations apply once, in order, even when several processes start at the same moment."""

from __future__ import annotations

import secrets
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from shared.migrate import create_database, migrate, migration_files


def _fresh_db(settings) -> str:  # type: ignore[no-untyped-def]
    parts = urlsplit(settings.database_url)
    name = f"warden_mig_{secrets.token_hex(4)}"
    create_database(urlunsplit(parts._replace(path="/postgres")), name)
    return urlunsplit(parts._replace(path="/" + name))


def test_twice_is_a_no_op(settings) -> None:  # type: ignore[no-untyped-def]
    url = _fresh_db(settings)
    first = migrate(url)
    assert first == [name for _, name, _ in migration_files()]
    assert migrate(url) == []


def test_concurrent_processes_apply_each_migration_once(settings) -> None:  # type: ignore[no-untyped-def]
    url = _fresh_db(settings)
    code = "import sys; from shared.migrate import migrate; print(len(migrate(sys.argv[1])))"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    counts = [int(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(counts) == [0, 0, 0, len(migration_files())]
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in cur.fetchall()] == [v for v, _, _ in migration_files()]
    conn.close()
