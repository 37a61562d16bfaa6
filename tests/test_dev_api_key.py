"""WARDEN_DEV_API_KEY of any shape either works or stops `make run` (``warden dev``) with one
clear line, before any service starts."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from shared.store import workspaces
from tests.support import ApiClient, run_warden

BAD = ["abc", "wdn_", "wdn_abc", "wdn_abc_short", "wdn__" + "x" * 20, "WDN_abc_" + "x" * 20,
       "wdn_ab-c_" + "x" * 20, "wdn_abc_" + "x" * 15, "wdn_abc_" + "x" * 10 + " " + "y" * 10,
       "wdn_abc_" + "é" * 20, "wdn_abc_" + "x" * 20 + "\nmore", "wdn_abc_" + "x" * 300,
       "wdn_" + "a" * 33 + "_" + "x" * 20, "Bearer wdn_abc_" + "x" * 20, "wdn_abc_" + "x/+=" * 5]


@pytest.mark.parametrize("value", BAD)
def test_a_key_of_another_shape_stops_make_run_in_one_line(tmp_path: Path, value: str) -> None:
    done = run_warden("dev", cwd=tmp_path, WARDEN_DEV_API_KEY=value)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warden dev: WARDEN_DEV_API_KEY: an API key must look like"), \
        done.stderr
    assert len(value.strip()) < 8 or value.strip() not in lines[0]  # a secret is never echoed
    assert not (tmp_path / ".warden").exists()  # stopped before starting anything


@pytest.mark.parametrize("value", [f"wdn_{secrets.token_hex(4)}_{secrets.token_urlsafe(12)}",
                                   f"wdn_Dev{secrets.token_hex(2)}_{'-_' * 8}{secrets.token_hex(4)}",
                                   f"  wdn_{secrets.token_hex(3)}_{'z' * 256}\n"])
def test_a_key_of_the_right_shape_works(server: Any, db: Any, value: str) -> None:
    ws = workspaces.get_or_create_workspace(db, f"devkey-{secrets.token_hex(4)}")
    key = workspaces.create_key(db, ws.id, name="dev", plain=value.strip())
    assert ApiClient(server.url, key).get("/api/v1/executions").status_code == 200
    assert workspaces.create_key(db, ws.id, name="dev", plain=value.strip()) == key  # the next `make run`


def test_a_taken_or_revoked_key_is_refused_not_printed_as_working(db: Any) -> None:
    ws = workspaces.get_or_create_workspace(db, f"devkey-{secrets.token_hex(4)}")
    other = workspaces.get_or_create_workspace(db, f"devkey-{secrets.token_hex(4)}")
    prefix = secrets.token_hex(4)
    workspaces.create_key(db, ws.id, plain=f"wdn_{prefix}_{'a' * 20}")
    with pytest.raises(ValueError, match="already exists"):  # same prefix, another secret
        workspaces.create_key(db, ws.id, plain=f"wdn_{prefix}_{'b' * 20}")
    with pytest.raises(ValueError, match="already exists"):  # the same key, another workspace
        workspaces.create_key(db, other.id, plain=f"wdn_{prefix}_{'a' * 20}")
    db.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s", (prefix,))
    with pytest.raises(ValueError, match="revoked"):
        workspaces.create_key(db, ws.id, plain=f"wdn_{prefix}_{'a' * 20}")
