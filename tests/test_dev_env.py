"""Commands run beside `make run` (create-key, revoke-key, …) reach the services it started,
through its .warden/dev.env, unless the environment names others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import run_warden
from warden.devstack import DEV_ENV, hold_checkout, with_dev_stack


def _write(root: Path, text: str) -> None:
    (root / DEV_ENV).parent.mkdir(parents=True, exist_ok=True)
    (root / DEV_ENV).write_text(text)


def _running(root: Path) -> Any:
    """Hold the checkout's dev lock as a running ``warden dev`` does."""
    lock = hold_checkout(root / ".warden")
    assert lock is not None
    return lock


def test_the_environment_wins_and_the_file_fills_the_rest(tmp_path: Path) -> None:
    assert with_dev_stack({"A": "1"}, tmp_path) == {"A": "1"}  # no dev stack running
    _write(tmp_path, "DATABASE_URL=postgresql:///dev?host=/sock\nREDIS_URL=redis://127.0.0.1:7/0\nOTHER=x\n")
    assert with_dev_stack({"A": "1"}, tmp_path) == {"A": "1"}  # a dev.env left by a killed stack
    with _running(tmp_path):
        env = with_dev_stack({"REDIS_URL": "redis://elsewhere:6379/0"}, tmp_path)
    assert env == {"DATABASE_URL": "postgresql:///dev?host=/sock", "REDIS_URL": "redis://elsewhere:6379/0"}


def test_without_urls_or_a_dev_stack_commands_touch_no_database(tmp_path: Path) -> None:
    """Not the built-in 127.0.0.1:5432 either: one line saying how to start a stack or what to set."""
    _write(tmp_path, "DATABASE_URL=postgresql://postgres@127.0.0.1:5432/warden\n")  # stale: nobody holds the lock
    for args in (("create-key", "--workspace", "x"), ("migrate",), ("revoke-key", "wk_x"),
                 ("rotate-signing-key",)):
        done = run_warden(*args, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "make run" in lines[0] and "DATABASE_URL" in lines[0], (args, done.stderr)
        assert done.stdout == ""


def test_create_and_revoke_key_in_a_second_terminal(settings: Any, db: Any, tmp_path: Path) -> None:
    from shared.store import workspaces

    _write(tmp_path, f"DATABASE_URL={settings.database_url}\nREDIS_URL={settings.redis_url}\n")
    with _running(tmp_path):
        made = run_warden("create-key", "--workspace", "second-terminal", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        assert workspaces.authenticate(db, key) is not None  # the key is in the dev stack's database
        revoked = run_warden("revoke-key", key, cwd=tmp_path)
        assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked", revoked.stderr
    assert workspaces.authenticate(db, key) is None


def test_make_run_creates_the_database_a_url_names_on_a_fresh_server(settings: Any) -> None:
    import secrets

    import psycopg2
    import psycopg2.extensions

    from shared.migrate import ensure_database

    params = psycopg2.extensions.parse_dsn(settings.database_url)
    name = f"warden_fresh_{secrets.token_hex(4)}"
    url = psycopg2.extensions.make_dsn(**{**params, "dbname": name})
    try:
        assert ensure_database(url) == name
        psycopg2.connect(url).close()
        assert ensure_database(url) is None  # there already
    finally:
        admin = psycopg2.connect(settings.database_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def test_a_command_with_no_database_says_so_in_one_line(tmp_path: Path) -> None:
    done = run_warden("create-key", "--workspace", "x", cwd=tmp_path,
                      DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Is `make run` running" in done.stderr


def test_one_dev_stack_per_checkout(tmp_path: Path) -> None:
    from warden.devstack import hold_checkout

    first = hold_checkout(tmp_path)
    assert first is not None
    assert hold_checkout(tmp_path) is None  # a second `make run` here stops before touching anything
    first.close()
    again = hold_checkout(tmp_path)
    assert again is not None
    again.close()


def test_make_run_starts_one_executions_worker_per_core_each_named() -> None:
    import os
    import subprocess

    from tests.support import ROOT
    from warden.devstack import procfile_processes

    procs = procfile_processes(ROOT, {"WARDEN_EXECUTIONS_PROCESSES": "3"})
    workers = [(name, cmd, extra) for name, cmd, extra in procs if name.startswith("executions")]
    assert [name for name, _, _ in workers] == ["executions1", "executions2", "executions3"]
    # The node name each one gets, as honcho's shell expands the line: all different.
    nodes = {subprocess.run(["/bin/sh", "-c", f"echo {cmd}"], env={**os.environ, **extra}, capture_output=True,
                            text=True, check=True).stdout.split(" -n ")[1].split()[0] for _, cmd, extra in workers}
    assert nodes == {"executions1@%h", "executions2@%h", "executions3@%h"}
    # Without the setting: one per core; the other lines once each, as written.
    default = procfile_processes(ROOT, {})
    assert sum(n.startswith("executions") for n, _, _ in default) == max(1, os.cpu_count() or 1)
    assert sum(n == "web" for n, _, _ in default) == 1


def test_a_bad_executions_processes_value_stops_make_run_in_one_line(tmp_path: Path) -> None:
    done = run_warden("dev", cwd=tmp_path, WARDEN_EXECUTIONS_PROCESSES="two")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "WARDEN_EXECUTIONS_PROCESSES" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
