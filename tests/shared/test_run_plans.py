"""The executor's statements find their execution by id, whatever the backlog: with hundreds of
other executions queued, neither a run's begin nor its guarded step write reads another row.
Checked on PostgreSQL's own plans (auto_explain, sent to this session as notices), past the
first executions of each prepared statement, where the server may switch to a generic plan."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg2
import psycopg2.extras
import pytest

from shared.ids import new_id
from shared.store import executions, runs, workspaces


def _filtered(node: dict[str, Any], out: list[tuple[str, int]]) -> None:
    if node.get("Relation Name") == "executions" and "Rows Removed by Filter" in node:
        out.append((node.get("Index Name") or node["Node Type"], node["Rows Removed by Filter"]))
    for child in node.get("Plans", ()):
        _filtered(child, out)


def test_begin_and_step_writes_read_only_their_own_row(settings: Any, db: Any) -> None:
    ws = workspaces.get_or_create_workspace(db, f"plans-{uuid.uuid4().hex}")
    ids = [new_id("exec") for _ in range(300)]
    with db.transaction() as cur:
        for eid in ids:
            executions.insert(cur, executions.NewExecution(
                id=eid, workspace_id=ws.id, task="t", compliance_policy="default", policy_version="1",
                provider="local", model="local-planner-1", budget_cents=100, requested_permissions=None,
                effective_permissions=[], denied_permissions=[], webhook_url=None, queued_event={}))
        cur.execute("DELETE FROM outbox WHERE args ?| %s", (ids,))  # no worker of this session runs them

    conn = psycopg2.connect(settings.database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            try:
                cur.execute("LOAD 'auto_explain'")
            except psycopg2.Error:
                pytest.skip("this PostgreSQL has no auto_explain module")
            for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_analyze = on",
                            "auto_explain.log_format = json", "auto_explain.log_level = notice",
                            "client_min_messages = notice"):
                cur.execute(f"SET {setting}")
        for eid in ids[:8]:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                begun = runs.begin(cur, eid, worker={"host": "plans", "pid": 1}, lease_s=30)
                assert begun.row is not None
                rid = begun.row["id"]  # the fair-share pick: the oldest queued run
                step = runs.Step(events=[("llm.completed", {"step": 1})], save={"state": {"step": 1}},
                                 token=begun.token)
                assert runs.write_step(cur, rid, step) is not None
                step = runs.Step(save={"state": {"step": 2}}, terminal=("succeeded", {"output": "done"}, None),
                                 token=begun.token)
                assert runs.write_step(cur, rid, step) is not None
        plans = [json.loads(n[n.index("{"):])["Plan"] for n in conn.notices if '"Plan"' in n]
    finally:
        conn.close()
        # Queued runs without a message would be taken by later tests' messages: end them.
        db.execute("UPDATE executions SET status = 'cancelled' WHERE id = ANY(%s) AND status = 'queued'", (ids,))
    assert len(plans) >= 3 * 8
    filtered: list[tuple[str, int]] = []
    for plan in plans:
        _filtered(plan, filtered)
    assert filtered and all(n == 0 for _, n in filtered), filtered
