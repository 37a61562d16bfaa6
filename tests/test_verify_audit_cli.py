"""``warden verify-audit`` in a subprocess with no database, no Redis and no network."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.bench_audit import synthetic_package

ROOT = Path(__file__).resolve().parents[1]

# Any attempt to open a socket fails: verification must not need one.
NO_NETWORK = (
    "import socket, sys\n"
    "def _refuse(*a, **k): raise OSError('network is disabled in this test')\n"
    "socket.socket = _refuse; socket.create_connection = _refuse; socket.getaddrinfo = _refuse\n"
    "from warden.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing", REDIS_URL="redis://127.0.0.1:1/0",
               CELERY_BROKER_URL="redis://127.0.0.1:1/0", PYTHONPATH=str(ROOT), **(extra_env or {}))
    return subprocess.run([sys.executable, "-c", NO_NETWORK, "verify-audit", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=str(ROOT))


@pytest.fixture(scope="module")
def package_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "exec_t.zip"
    path.write_bytes(synthetic_package(3000, execution_id="exec_t"))
    return path


def test_valid_package_exits_zero_with_summary_and_progress(package_file: Path) -> None:
    proc = run_cli(str(package_file), extra_env={"WARDEN_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK:" in proc.stdout and "exec_t" in proc.stdout and "certificates   3000" in proc.stdout
    assert "6010/6010 entries" in proc.stderr  # the progress bar reached the end


def test_tampered_package_exits_nonzero_and_names_the_problem(package_file: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(package_file) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    lines = files["certificates.jsonl"].splitlines(keepends=True)
    cert = json.loads(lines[41])
    cert["permission"] = "email:send"
    lines[41] = json.dumps(cert).encode() + b"\n"
    files["certificates.jsonl"] = b"".join(lines)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(out.getvalue())
    proc = run_cli(str(bad), "--quiet")
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout
    assert "certificates.jsonl line 42: hash_mismatch" in proc.stdout
    assert "manifest_hash_mismatch" in proc.stdout and "checkpoint_hash_mismatch" in proc.stdout


def test_pinned_keys_and_missing_file(package_file: Path, tmp_path: Path) -> None:
    from guard import SigningKey

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [SigningKey.from_seed(bytes(32)).public_jwk()]}))
    proc = run_cli(str(package_file), extra_env={"WARDEN_TRUSTED_KEYS": str(keys)})
    assert proc.returncode == 1 and "checkpoint.json: unknown_key" in proc.stdout
    assert run_cli(str(tmp_path / "nope.zip")).returncode == 2
