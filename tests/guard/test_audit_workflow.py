"""Workflow audit packages, offline: valid verifies; swapping, dropping or editing a stage
package, or editing the workflow log, is caught and located."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from bench.bench_audit import synthetic_package
from guard import SigningKey
from guard.audit_workflow import build_workflow_package, verify_any

KEY = SigningKey.from_seed(bytes(range(32)))


def workflow(status: str = "succeeded") -> dict:
    return {"workflow_id": "wf_t", "status": status, "stages": [
        {"name": "a", "execution_id": "exec_a", "status": "succeeded"},
        {"name": "b", "execution_id": "exec_b", "status": "succeeded"},
        {"name": "c", "execution_id": None, "status": "cancelled"}]}


@pytest.fixture(scope="module")
def package() -> bytes:
    events = [{"workflow_id": "wf_t", "seq": i, "type": "stage.started", "at": "2026-01-01T00:00:00+00:00",
               "data": {"stage": s}} for i, s in enumerate(["a", "b"], start=1)]
    stages = {"a": synthetic_package(5, KEY, execution_id="exec_a"),
              "b": synthetic_package(3, KEY, execution_id="exec_b")}
    return build_workflow_package(workflow=workflow(), events=events, stage_packages=stages, signing_key=KEY,
                                  created_at="2026-01-01T00:00:00Z")


def rewrite(data: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return out.getvalue()


def found(data: bytes) -> set[tuple[str, str]]:
    return {(p.file, p.code) for p in verify_any(data).problems}


def test_valid(package: bytes) -> None:
    report = verify_any(package)
    assert report.ok, report.problems
    assert report.summary["kind"] == "workflow" and set(report.summary["stages"]) == {"a", "b"}
    assert report.summary["stages"]["a"]["certificates"] == 5


def test_swapped_stage_package(package: bytes) -> None:
    def swap(files: dict[str, bytes]) -> None:
        files["stages/a.zip"], files["stages/b.zip"] = files["stages/b.zip"], files["stages/a.zip"]

    problems = found(rewrite(package, swap))
    assert ("stages/a.zip", "execution_mismatch") in problems
    assert ("stages/a.zip", "checkpoint_hash_mismatch") in problems


def test_dropped_stage_package(package: bytes) -> None:
    problems = found(rewrite(package, lambda f: f.pop("stages/b.zip")))
    assert ("stages/b.zip", "missing_file") in problems


def test_edited_inside_a_stage_package(package: bytes) -> None:
    def edit(files: dict[str, bytes]) -> None:
        files["stages/a.zip"] = rewrite(files["stages/a.zip"], lambda f: f.update(
            {"events.jsonl": f["events.jsonl"].replace(b'"ok":true', b'"ok":false', 1)}))

    problems = found(rewrite(package, edit))
    assert ("stages/a.zip/events.jsonl", "chain_mismatch") in problems


def test_edited_workflow_log_and_status(package: bytes) -> None:
    def edit(files: dict[str, bytes]) -> None:
        files["workflow_events.jsonl"] = files["workflow_events.jsonl"].replace(b'"stage":"b"', b'"stage":"c"')
        wf = json.loads(files["workflow.json"])
        wf["status"] = "failed"
        files["workflow.json"] = json.dumps(wf).encode()

    problems = found(rewrite(package, edit))
    assert ("workflow_events.jsonl", "chain_mismatch") in problems
    assert ("workflow.json", "checkpoint_hash_mismatch") in problems


def test_execution_packages_still_dispatch() -> None:
    assert verify_any(synthetic_package(2, KEY)).ok
