"""Group commit: concurrent callers share statements, each gets its own answer, and a bad row
fails alone. Then the same through the real intake: concurrent POSTs, every execution stored once
with its first event and its outbox row."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg2
import pytest

from shared.errors import ServiceUnavailable
from shared.groupcommit import GroupWriter
from tests.support import ApiClient


class Recorder:
    """A write function that takes a while (like a commit) and records every batch it saw."""

    def __init__(self, fail_on: object = None, error: type[BaseException] = ValueError) -> None:
        self.batches: list[list[int]] = []
        self.fail_on, self.error = fail_on, error
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(0.005)
        with self.lock:
            self.batches.append(list(items))
        if self.fail_on in items:
            raise self.error(f"refused {self.fail_on}")
        return [i * 10 for i in items]


def _submit_all(writer: GroupWriter[int, int], items: list[int]) -> dict[int, Any]:
    start = threading.Barrier(len(items))

    def one(i: int) -> Any:
        start.wait()
        try:
            return writer.submit(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(items)) as pool:
        return dict(zip(items, pool.map(one, items), strict=True))


def test_a_lone_caller_writes_at_once() -> None:
    rec = Recorder()
    writer = GroupWriter(rec)
    assert writer.submit(3) == 30
    assert writer.submit(4) == 40
    assert rec.batches == [[3], [4]]


def test_concurrent_callers_share_batches_and_each_gets_its_own_result() -> None:
    rec = Recorder()
    writer = GroupWriter(rec, max_batch=8)
    results = _submit_all(writer, list(range(40)))
    assert results == {i: i * 10 for i in range(40)}
    written = sorted(i for b in rec.batches for i in b)
    assert written == list(range(40))  # every item exactly once
    assert len(rec.batches) < 40  # they were grouped
    assert max(len(b) for b in rec.batches) <= 8
    assert writer.batches == len(rec.batches)


def test_a_bad_row_fails_alone() -> None:
    rec = Recorder(fail_on=7)
    writer = GroupWriter(rec)
    results = _submit_all(writer, list(range(20)))
    assert isinstance(results[7], ValueError) and "refused 7" in str(results[7])
    assert {i: r for i, r in results.items() if i != 7} == {i: i * 10 for i in range(20) if i != 7}
    committed = [b for b in rec.batches if 7 not in b]
    assert sorted(i for b in committed for i in b) == [i for i in range(20) if i != 7]


@pytest.mark.parametrize("error", [ServiceUnavailable, psycopg2.OperationalError])
def test_connection_trouble_is_every_rows_answer_without_retries(error: type[BaseException]) -> None:
    rec = Recorder(fail_on=0, error=error)
    writer = GroupWriter(rec)
    with pytest.raises(error):
        writer.submit(0)
    assert rec.batches == [[0]]
    assert writer.submit(1) == 10  # the writer is usable afterwards


def test_intake_under_concurrency_stores_each_execution_once(client: ApiClient, db: Any) -> None:
    body = {"task": "List my documents", "compliance_policy": "default", "budget_cents": 500}
    start = threading.Barrier(24)

    def post(_: int) -> Any:
        start.wait()
        return client.post("/api/v1/tasks", json=body)

    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(post, range(24)))
    assert [r.status_code for r in responses] == [201] * 24
    ids = [r.json()["execution_id"] for r in responses]
    assert len(set(ids)) == 24
    rows = db.fetchall(
        "SELECT e.id,"
        " (SELECT count(*) FROM execution_events v WHERE v.execution_id = e.id AND v.seq = 1"
        "   AND v.type = 'execution.queued') AS queued_events,"
        " (SELECT count(*) FROM outbox o WHERE o.args = jsonb_build_array(e.id)) AS outbox_rows"
        " FROM executions e WHERE e.id = ANY(%s)", (ids,))
    assert len(rows) == 24
    assert all(r["queued_events"] == 1 and r["outbox_rows"] == 1 for r in rows)
    for eid in ids:  # and each reads back as submitted
        got = client.get(f"/api/v1/executions/{eid}")
        assert got.status_code == 200 and got.json()["task"] == body["task"]


def test_workspaces_cannot_be_deleted(db: Any, workspace: tuple[str, str]) -> None:
    with pytest.raises(psycopg2.errors.RestrictViolation):
        db.execute("DELETE FROM api_keys WHERE workspace_id = %s; DELETE FROM workspaces WHERE id = %s",
                   (workspace[0], workspace[0]))
