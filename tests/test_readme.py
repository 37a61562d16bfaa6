"""The README works literally: its shell blocks run in order, in one shell, against the stack that
`make run` starts, and each documented result (a `# → ` line: fragments that must appear in the
block's output, in order, `…` standing for what differs between runs) is checked.

The stack is real: `make run` in a copy of the checkout (its own `.warden/`, so its embedded
PostgreSQL and Redis are fresh and nobody else's), on a free port, stopped with SIGINT as Ctrl-C
stops it; it must end without `make: *** … Error`. A block preceded by `<!-- not run …-->` is
skipped (the one that starts the stack, and the deployment recipe).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import ROOT
from warden.services import free_port

README = ROOT / "README.md"
DOCUMENTED_HOST = "127.0.0.1:8000"  # the README's API address; the test's stack runs on a free port
_FENCE = re.compile(r"^```(\w*)\s*$")
_RESULT = re.compile(r"#\s*→\s?(.*)$")
# What the copy of the checkout links to rather than copies (the code and the installed venv).
_LINKED = ("api", "workers", "guard", "compiler", "shared", "warden", "bench", ".venv", "pyproject.toml")


@dataclass
class Block:
    line: int  # of the opening fence in README.md
    code: str
    expected: list[str]


def shell_blocks(text: str) -> list[Block]:
    """The ```sh blocks the walk-through runs, in order, with their documented results."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        previous = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        if lang == "sh" and not previous.startswith("<!-- not run"):
            body = lines[start + 1 : j]
            expected = [r.group(1) for ln in body if (r := _RESULT.search(ln)) and ln.lstrip().startswith("#")]
            out.append(Block(start + 1, "\n".join(body), expected))
        i = j + 1
    return out


def unmet(output: str, expected: list[str]) -> str | None:
    """The first documented result not found in ``output`` (fragments in order, across lines)."""
    at = 0
    for line in expected:
        for fragment in (f.strip() for f in line.split("…")):
            if not fragment:
                continue
            found = output.find(fragment, at)
            if found < 0:
                return f"{line!r} (fragment {fragment!r} not found after offset {at})"
            at = found + len(fragment)
    return None


def run_blocks(blocks: list[Block], *, cwd: Path, api: str, timeout: float = 120) -> list[tuple[Block, str]]:
    """Run every block in one bash process (variables and functions carry over, as in one
    terminal); return each block's output (stdout and stderr)."""
    marker = "@@readme-block-done@@"
    script = "\n".join(f"{_at(b.code, api)}\necho {marker}" for b in blocks)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY",
                                                            "ANTHROPIC_API_KEY", "WARDEN_TRUSTED_KEYS")}
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    parts = done.stdout.split(marker + "\n")
    assert len(parts) == len(blocks) + 1, f"the blocks did not all run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return [(b, parts[i] + (f"\n[stderr]\n{done.stderr}" if i == len(blocks) - 1 else "")) for i, b in
            enumerate(blocks)]


def _at(text: str, api: str) -> str:
    """``text`` with the README's API address replaced by ``api``'s (http and ws URLs alike)."""
    return text.replace(DOCUMENTED_HOST, api.split("://", 1)[1])


def _copy_checkout(dest: Path) -> None:
    for name in _LINKED:
        (dest / name).symlink_to(ROOT / name)
    for name in ("Makefile", "Procfile"):
        shutil.copy(ROOT / name, dest / name)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    if not (ROOT / ".venv" / "bin" / "warden").exists():
        pytest.skip("no .venv in the checkout: make install creates it")  # the suite always runs from one
    root = tmp_path_factory.mktemp("checkout")
    _copy_checkout(root)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY",
                                                            "ANTHROPIC_API_KEY", "WARDEN_DEV_API_KEY", "MAKEFLAGS",
                                                            "MAKELEVEL")}
    env.update(PORT=str(port), WEB_CONCURRENCY="1", WARDEN_EXECUTIONS_CONCURRENCY="1")
    # -o: never reinstall from the copy (the venv is the checkout's, already installed).
    proc = subprocess.Popen(["make", "-o", ".venv/.installed-stamp", "run"], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if requests.get(api + "/readyz", timeout=1).status_code == 200 and \
                        (root / ".warden" / "dev-api-key").exists():
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"make run did not come up:\n{proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.2)
        yield root, api, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches make and every process under it
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_the_readme_runs_as_written(make_run: tuple[Path, str, subprocess.Popen[str]]) -> None:
    root, api, proc = make_run
    blocks = shell_blocks(README.read_text())
    assert len(blocks) >= 8 and all(b.expected for b in blocks), [(b.line, len(b.expected)) for b in blocks]
    problems = [f"README.md line {block.line}: {problem}\n--- output ---\n{output[-3000:]}"
                for block, output in run_blocks(blocks, cwd=root, api=api)
                if (problem := unmet(output, [_at(e, api) for e in block.expected])) is not None]
    assert not problems, "\n\n".join(problems)
    # Ctrl-C: everything stops, and make reports no error.
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    # make gets the SIGINT too (as from a terminal): it ends by that signal, or 0, never with an error.
    assert proc.returncode in (0, -signal.SIGINT), out[-3000:]
    assert "make: ***" not in out and "Traceback" not in out, out[-3000:]
    banner = out[: out.index("system     |")] if "system     |" in out else out
    assert "Redis" in banner and "PostgreSQL" in banner and "Warning" not in banner, banner
    assert '"GET /readyz HTTP/1.1" 200' in out  # one access-log line per request
    from warden.devstack import executions_processes

    n = executions_processes(os.environ)  # one executions worker per core, each under its own name
    assert n == 1 or all(f"executions{i}@" in out for i in range(1, n + 1)), out[-3000:]
    assert (root / ".warden" / "gunicorn.ctl").exists() or "Control socket listening at " + str(root) in out


def test_every_cli_command_is_in_the_readme_and_back() -> None:
    """`warden --help` lists what the README uses, the README shows every listed command, and the
    help has no reStructuredText markup."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "warden"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "``" not in done.stdout
    listed = set(re.findall(r"^    ([a-z][a-z-]+)\b", done.stdout, re.M))
    assert {"dev", "migrate", "create-key", "revoke-key", "relay", "verify-audit", "rotate-signing-key",
            "bench"} <= listed, done.stdout
    text = README.read_text()
    used = set(re.findall(r"\bwarden ([a-z][a-z-]+)", text)) - {"dev"}  # `warden dev` is what make run runs
    assert used <= listed, used - listed
    assert [c for c in listed if f"warden {c}" not in text] == []
