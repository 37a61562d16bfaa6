"""``warden verify-audit FILE``: verify an audit package offline (no database, no network).

Exit 0 with a summary when the package verifies; 1 with the list of problems (file, line, what)
otherwise; 2 when the file cannot be read. A progress bar goes to stderr when it is a terminal
(or always with ``WARDEN_PROGRESS=1``) unless ``--quiet``. ``WARDEN_TRUSTED_KEYS=FILE`` (the JSON
saved from ``GET /api/v1/compliance/keys``) pins the signer instead of trusting the package's keys.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from guard.audit import Report
from guard.audit_workflow import verify_any

MAX_LISTED = 200


class ProgressBar:
    """A one-line bar on a stream, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str = "verifying", width: int = 30) -> None:
        self.stream, self.label, self.width = stream, label, width
        self.start = time.monotonic()
        self._last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            return
        self._last = now
        rate = done / max(now - self.start, 1e-9)
        if total:
            frac = min(done / total, 1.0)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            text = f"\r{self.label} [{bar}] {done}/{total} entries {frac:4.0%} {rate:,.0f}/s"
        else:
            text = f"\r{self.label} {done} entries {rate:,.0f}/s"
        self.stream.write(text)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _summary(report: Report, path: Path, elapsed: float) -> str:
    s = report.summary
    signer = f"{s.get('signed_by')} ({'pinned' if s.get('signer_pinned') else 'from the package keys.json'})"
    if s.get("kind") == "workflow":
        lines = [f"OK: {path} is a valid workflow audit package",
                 f"  workflow       {s.get('workflow_id')} ({s.get('status')})"]
        for name, st in s.get("stages", {}).items():
            lines.append(f"  stage {name:<9}{st.get('execution_id')} ({st.get('status')}): {st.get('certificates')} "
                         f"certificates, {st.get('events')} events, {st.get('violations')} violations")
        return "\n".join([*lines, f"  checkpoint     signed by {signer}",
                          f"  verified {s.get('entries', 0)} entries in {elapsed:.2f}s"])
    return "\n".join([
        f"OK: {path} is a valid audit package",
        f"  execution      {s.get('execution_id')} ({s.get('status')})",
        f"  policy         {s.get('policy')}",
        f"  certificates   {s.get('certificates', 0)} (signatures and hash chain verified)",
        f"  events         {s.get('events', 0)} (seq 1..{s.get('events', 0)}, hash chain verified)",
        f"  violations     {s.get('violations', 0)}",
        f"  checkpoint     signed by {signer}",
        f"  verified {s.get('entries', 0)} entries in {elapsed:.2f}s",
    ])


def verify_audit_file(path: Path, *, quiet: bool = False, keys: Path | None = None,
                      stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if not path.is_file():
        print(f"error: {path}: no such file", file=err)
        return 2
    trusted: Any = None
    keys = keys or (Path(os.environ["WARDEN_TRUSTED_KEYS"]) if os.environ.get("WARDEN_TRUSTED_KEYS") else None)
    if keys is not None:
        try:
            trusted = json.loads(keys.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"error: cannot read keys from {keys}: {exc}", file=err)
            return 2
    show = not quiet and (err.isatty() or os.environ.get("WARDEN_PROGRESS") == "1")
    bar = ProgressBar(err) if show else None
    start = time.monotonic()
    try:
        report = verify_any(path, progress=bar, trusted_keys=trusted)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc}", file=err)
        return 2
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.monotonic() - start
    if report.ok:
        if not quiet:
            print(_summary(report, path, elapsed), file=out)
        return 0
    print(f"FAILED: {path} does not verify: {len(report.problems)} problem(s)", file=out)
    for problem in report.problems[:MAX_LISTED]:
        print(f"  - {problem}", file=out)
    if len(report.problems) > MAX_LISTED:
        print(f"  … and {len(report.problems) - MAX_LISTED} more", file=out)
    return 1
