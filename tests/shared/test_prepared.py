"""Prepared statements: prepared once per connection, executed with named parameters, kept across
rolled-back transactions, prepared afresh on another connection."""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extras

from shared.db import Prepared


def _prepared_names(cur: Any) -> list[str]:
    cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
    return [r["name"] for r in cur.fetchall()]


def test_prepared_once_per_connection_and_executed_with_named_parameters(settings: Any) -> None:
    stmt = Prepared("SELECT %(a)s::int + %(b)s::int AS sum, %(a)s::int * 2 AS twice, 'x%%y' AS lit")
    conn = psycopg2.connect(settings.database_url)
    try:
        cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        for a in range(3):
            stmt.execute(cur, {"a": a, "b": 10})
            assert dict(cur.fetchone()) == {"sum": a + 10, "twice": 2 * a, "lit": "x%y"}
        assert _prepared_names(cur).count(stmt.name) == 1
        conn.rollback()  # PREPARE is not transactional: still there, not prepared again
        stmt.execute(cur, {"a": 5, "b": 5})
        assert cur.fetchone()["sum"] == 10
        assert _prepared_names(cur).count(stmt.name) == 1
    finally:
        conn.close()
    other = psycopg2.connect(settings.database_url)  # a new session knows nothing: prepared again
    try:
        cur = other.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        assert stmt.name not in _prepared_names(cur)
        stmt.execute(cur, {"a": 1, "b": 1})
        assert cur.fetchone()["sum"] == 2
        assert stmt.name in _prepared_names(cur)
    finally:
        other.close()


def test_the_same_text_shares_a_name_and_different_texts_do_not() -> None:
    assert Prepared("SELECT %(x)s::int").name == Prepared("SELECT %(x)s::int").name
    assert Prepared("SELECT %(x)s::int").name != Prepared("SELECT %(x)s::bigint").name


def test_a_generic_plan_statement_is_never_planned_per_call(settings: Any) -> None:
    """``generic_plan=True``: every call runs the one generic plan (PostgreSQL would otherwise plan
    the first five calls for their values, and may keep doing so), and the setting ends with the
    statement: the next statement on the connection plans as before."""
    sql = "SELECT count(*) AS n FROM generate_series(1, %(k)s::int) s WHERE s > %(k)s::int / 2"
    generic = Prepared(sql, generic_plan=True)
    custom = Prepared(sql + " AND true")
    plain = Prepared("SELECT %(k)s::int AS k")
    conn = psycopg2.connect(settings.database_url)
    conn.autocommit = True
    try:
        cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        for k in range(1, 9):
            generic.execute(cur, {"k": k * 10})
            assert cur.fetchone()["n"] == k * 10 - k * 5
            custom.execute(cur, {"k": k * 10})
            assert cur.fetchone()["n"] == k * 10 - k * 5
            plain.execute(cur, {"k": k})
            assert cur.fetchone()["k"] == k
        cur.execute("SHOW plan_cache_mode")
        assert cur.fetchone()["plan_cache_mode"] == "auto"
        cur.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
        plans = {r["name"]: (r["generic_plans"], r["custom_plans"]) for r in cur.fetchall()}
        assert plans[generic.name] == (8, 0)
        assert plans[custom.name][1] >= 5  # the default: the first five calls planned for their values
    finally:
        conn.close()
