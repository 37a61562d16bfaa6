"""The executor's statements find their execution by id, whatever the backlog: with hundreds of
other executions queued, neither a run's begin nor its guarded step write reads another row.
Checked on PostgreSQL's own plans (auto_explain, sent to this session as notices), past the
first executions of each prepared statement, where the server may switch to a generic plan."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extras
import pytest

from shared.db import Database
from shared.ids import new_id
from shared.migrate import create_database, drop_database, migrate
from shared.store import executions, runs, workspaces


def _filtered(node: dict[str, Any], out: list[tuple[str, int]]) -> None:
    if node.get("Relation Name") == "executions" and "Rows Removed by Filter" in node:
        out.append((node.get("Index Name") or node["Node Type"], node["Rows Removed by Filter"]))
    for child in node.get("Plans", ()):
        _filtered(child, out)


def _queue(db: Any, n: int) -> list[str]:
    ws = workspaces.get_or_create_workspace(db, f"plans-{uuid.uuid4().hex}")
    ids = [new_id("exec") for _ in range(n)]
    with db.transaction() as cur:
        for eid in ids:
            executions.insert(cur, executions.NewExecution(
                id=eid, workspace_id=ws.id, task="t", compliance_policy="default", policy_version="1",
                provider="local", model="local-planner-1", budget_cents=100, requested_permissions=None,
                effective_permissions=[], denied_permissions=[], webhook_url=None, queued_event={}))
        cur.execute("DELETE FROM outbox WHERE args ?| %s", (ids,))  # no worker of this session runs them
    return ids


def _connect_explained(url: str) -> Any:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        try:
            cur.execute("LOAD 'auto_explain'")
        except psycopg2.Error:
            conn.close()
            pytest.skip("this PostgreSQL has no auto_explain module")
        for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_analyze = on",
                        "auto_explain.log_format = json", "auto_explain.log_level = notice",
                        "client_min_messages = notice"):
            cur.execute(f"SET {setting}")
    return conn


def _run_through(conn: Any, tickets: list[str]) -> list[str]:
    """Begin a run per ticket and write two steps, the second terminal; the runs' ids."""
    ran = []
    for eid in tickets:
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
            ran.append(rid)
    return ran


def _assert_own_rows_only(conn: Any, runs_checked: int) -> None:
    plans = [json.loads(n[n.index("{"):])["Plan"] for n in conn.notices if '"Plan"' in n]
    assert len(plans) >= 3 * runs_checked
    filtered: list[tuple[str, int]] = []
    for plan in plans:
        _filtered(plan, filtered)
    assert filtered and all(n == 0 for _, n in filtered), filtered


def test_begin_and_step_writes_read_only_their_own_row(settings: Any, db: Any) -> None:
    ids = _queue(db, 300)
    conn = _connect_explained(settings.database_url)
    try:
        ran = _run_through(conn, ids[:8])
        _assert_own_rows_only(conn, 8)
    finally:
        conn.close()
        # Queued runs without a message would be taken by later tests' messages: end them.
        db.execute("UPDATE executions SET status = 'cancelled' WHERE id = ANY(%s) AND status = 'queued'", (ids,))
    # A finished run leaves the ticket index (executions_ticket holds the runs that started and did not end).
    assert db.fetchall("SELECT id FROM executions WHERE id = ANY(%s) AND ticket IS NOT NULL", (ran,)) == []


def test_plans_made_on_a_fresh_database_stay_right_with_a_backlog(settings: Any) -> None:
    """A worker's connection makes its generic plans on first use: on a fresh database, with a
    handful of rows, where every index of ``executions`` costs about the same. The same plans must
    still read only their own row once hundreds of runs are queued and running (migration 0015)."""
    parts = urlsplit(settings.database_url)
    name = f"warden_plans_{secrets.token_hex(4)}"
    create_database(urlunsplit(parts._replace(path="/postgres")), name)
    url = urlunsplit(parts._replace(path="/" + name))
    migrate(url)
    fresh = Database(url, maxconn=2)
    conn = _connect_explained(url)
    try:
        _run_through(conn, _queue(fresh, 1))  # every statement planned with one row in the table
        conn.notices.clear()
        ids = _queue(fresh, 300)
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:  # 100 of them running
            for eid in ids[:100]:
                assert runs.begin(cur, eid, worker={"host": "plans", "pid": 2}, lease_s=30).row is not None
        conn.notices.clear()
        _run_through(conn, ids[100:108])
        _assert_own_rows_only(conn, 8)
    finally:
        conn.close()
        fresh.close()
        drop_database(urlunsplit(parts._replace(path="/postgres")), name)
