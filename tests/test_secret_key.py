"""Outside ``make run`` (which generates a secret per checkout), a missing or placeholder
``WARDEN_SECRET_KEY`` stops the API and worker processes at start with one clear line."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import ConfigError, require_secret_key

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENTRIES = {
    "api": [str(BIN / "gunicorn"), "-c", "api/gunicorn_conf.py", "api.app:create_app()"],
    "worker": [str(BIN / "celery"), "-A", "workers.main", "worker", "--pool", "solo", "-Q", "executions"],
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("secret", [None, "", "  ", "change-me", "dev-insecure-secret-change-me"])
def test_process_refuses_to_start_without_a_real_secret(tmp_path, entry, secret):
    env = {k: v for k, v in os.environ.items() if k != "WARDEN_SECRET_KEY"}
    # Unreachable services: were the check missing, the process would start and keep trying them.
    env.update(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none", REDIS_URL="redis://127.0.0.1:9/0",
               PORT="0", WEB_CONCURRENCY="1", HOME=str(tmp_path))
    if secret is not None:
        env["WARDEN_SECRET_KEY"] = secret
    out = subprocess.run(ENTRIES[entry], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    errors = [line for line in out.stderr.splitlines() if "warden:" in line or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("warden: configuration error: WARDEN_SECRET_KEY"), out.stderr
    assert "Traceback" not in out.stderr


def test_a_real_secret_passes():
    require_secret_key({"WARDEN_SECRET_KEY": secrets.token_urlsafe(32)})
    for bad in ({}, {"WARDEN_SECRET_KEY": ""}, {"WARDEN_SECRET_KEY": "CHANGE-ME"}):
        with pytest.raises(ConfigError):
            require_secret_key(bad)
