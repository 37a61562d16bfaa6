"""A message names each series with its batch's newest ts: one an earlier evaluation already
covered is skipped from the committed heads alone, one that is not covered is evaluated, and a
message in the old shape (no ts) still works."""

from __future__ import annotations

import secrets

from tests.workers.signals_helpers import alerts_of, at, fired_minutes, make_task, send, settled
from workers.evaluation import evaluate_groups


def test_covered_and_uncovered_messages(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    send(client, entity, "price", [(0, 100), (1, 250)])
    settled(db, workspace[0])
    assert fired_minutes(alerts_of(client, task["task_id"])) == [1]
    ws = workspace[0]
    assert evaluate_groups(ws, [[entity, "price", at(0)]]) == []  # covered: the head is at minute 1
    assert evaluate_groups(ws, [[entity, "price", at(1)]]) == []
    assert evaluate_groups(ws, [[entity, "price", at(5)]]) == []  # not covered, but nothing newer stored
    assert evaluate_groups(ws, [[entity, "price"]]) == []
    assert len(alerts_of(client, task["task_id"])) == 1
    # Stored without a message (as if its message were still queued): a later message evaluates it.
    with db.transaction() as cur:
        cur.execute("INSERT INTO signals (workspace_id, entity, metric, ts, value) VALUES (%s, %s, 'price', %s, 100),"
                    " (%s, %s, 'price', %s, 300)", (ws, entity, at(2), ws, entity, at(3)))
    assert len(evaluate_groups(ws, [[entity, "price", at(3)]])) == 1
    settled(db, ws)
    assert fired_minutes(alerts_of(client, task["task_id"])) == [1, 3]


def test_ingest_names_each_series_with_its_newest_ts(stack, client, db, workspace):
    entity = f"E{secrets.token_hex(3)}"
    send(client, entity, "price", [(3, 1), (1, 2), (2, 3)])
    send(client, entity, "volume", [(0, 1)])
    row = db.fetchone("SELECT args FROM outbox WHERE task_name = 'workers.evaluation.evaluate'"
                      " AND args::text LIKE %s ORDER BY id DESC LIMIT 1", (f"%{entity}%price%",))
    assert row["args"][1] == [[entity, "price", at(3)]]


def test_a_remembered_head_skips_the_database(stack, client, db, workspace, monkeypatch):
    from shared.store import signals
    from workers import evaluation

    entity = f"E{secrets.token_hex(3)}"
    task = make_task(client, f"Tell me if {entity} price goes above 200", entity)
    send(client, entity, "price", [(0, 100), (1, 250)])
    settled(db, workspace[0])
    ws = workspace[0]
    assert evaluate_groups(ws, [[entity, "price", at(1)]]) == []  # reads the committed head (minute 1)

    def no_query(*_a, **_k):
        raise AssertionError("covered message touched the database")

    with monkeypatch.context() as m:
        m.setattr(signals, "unevaluated", no_query)
        assert evaluate_groups(ws, [[entity, "price", at(0)]]) == []
        assert evaluate_groups(ws, [[entity, "price", at(1)]]) == []
    # Newer than any remembered head: evaluated from the database as usual.
    with db.transaction() as cur:
        cur.execute("INSERT INTO signals (workspace_id, entity, metric, ts, value) VALUES (%s, %s, 'price', %s, 100),"
                    " (%s, %s, 'price', %s, 300)", (ws, entity, at(2), ws, entity, at(3)))
    assert len(evaluate_groups(ws, [[entity, "price", at(3)]])) == 1
    assert evaluation._covered(evaluation.runtime.db().url, ws, [[entity, "price", at(3)]])
    settled(db, ws)
    assert fired_minutes(alerts_of(client, task["task_id"])) == [1, 3]
