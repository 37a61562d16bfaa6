"""A run message's first statement (the claim of a queued run, or the takeover of an orphaned
one) commits, but its answer never reaches the worker: the connection drops right then (a real
TCP connection to PostgreSQL, cut by a proxy after the server said the statement was done). The
run is left ``running`` under a lease nobody renews. The message comes back naming the attempt
that took that lease (workers.executor.Abandoned.attempts, kept through a begin that then failed
without reaching the database) and takes the run back at once, instead of waiting out the lease
(60 s here); a message that does not name it, or names another, waits.
The run then ends once: one start, one take-back, one terminal event, its certificates valid."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from guard import load_policy, resolve_permissions, verify_chain
from guard.certificates import b64url_decode, public_jwk
from shared.db import Database
from shared.ids import new_id
from shared.migrate import create_database, drop_database, migrate
from shared.store import executions, runs, signing_keys, workspaces
from tests.fakes.pgcut import AnswerCut
from workers.executor import MAX_ATTEMPTS, Abandoned, execute

LEASE_S = 60.0


@pytest.fixture()
def fresh_db(settings: Any):
    """A database of its own: the claim takes the next queued run by fair share, which must be
    this test's."""
    parts = urlsplit(settings.database_url)
    admin, name = urlunsplit(parts._replace(path="/postgres")), f"warden_lost_{secrets.token_hex(4)}"
    create_database(admin, name)
    url = urlunsplit(parts._replace(path="/" + name))
    migrate(url)
    db = Database(url, maxconn=2)
    try:
        yield db
    finally:
        db.close()
        drop_database(admin, name)


def _run(db: Database, *, running: bool) -> str:
    policy = load_policy("default")
    res = resolve_permissions(policy, None)
    ws = workspaces.get_or_create_workspace(db, "lost-claim")
    eid = new_id("exec")
    with db.transaction() as cur:
        executions.insert(cur, executions.NewExecution(
            id=eid, workspace_id=ws.id, task="List my documents", compliance_policy=policy.name,
            policy_version=policy.version, provider="local", model=None, budget_cents=100,
            requested_permissions=None, effective_permissions=res.effective, denied_permissions=res.denied,
            webhook_url=None, queued_event={}))
        if running:  # started by a worker that died: its lease expired, nobody drives it
            cur.execute("UPDATE executions SET status = 'running', started_at = now(), lease_token = 7, ticket = id,"
                        " deliveries = 1, lease_expires_at = now() - interval '1 second' WHERE id = %s", (eid,))
    return eid


def _lose_the_answer(db: Database, settings: Any, eid: str, statement: Any) -> Abandoned:
    cut = AnswerCut(db.url, f"EXECUTE {statement.name}".encode())
    through = Database(cut.url, maxconn=1)
    try:
        with pytest.raises(Abandoned) as lost:
            execute(eid, through, settings)
        assert cut.cut.is_set(), "the proxy did not cut the statement's answer"
    finally:
        through.close()
        cut.close()
    return lost.value


@pytest.mark.parametrize("case", ["claim", "takeover"])
def test_a_run_whose_claim_answer_was_lost_is_taken_back_at_once(stack, fresh_db, settings, case):
    db = fresh_db
    settings = settings.with_overrides(lease_s=LEASE_S)
    eid = _run(db, running=case == "takeover")
    before = db.fetchone("SELECT deliveries FROM executions WHERE id = %s", (eid,))["deliveries"]

    lost = _lose_the_answer(db, settings, eid, runs._LOOK_CLAIM if case == "claim" else runs._TAKEOVER)
    row = db.fetchone("SELECT status, lease_token, deliveries, lease_expires_at > now() + interval '50 seconds'"
                      " AS live, state FROM executions WHERE id = %s", (eid,))
    # The statement committed: the run is taken, under a lease of 60 s that nobody renews.
    assert row["status"] == "running" and row["live"] and row["deliveries"] == before + 1, row
    said = lost.message()
    assert said is not None and len(said["attempts"]) == 1 and "execution_id" not in said

    # The database is still down when the message comes back: that begin fails too, without
    # reaching it, and the message keeps naming the first attempt beside its own.
    unreachable = Database("postgresql://nobody@127.0.0.1:9/none", maxconn=1)
    with pytest.raises(Abandoned) as again:
        execute(eid, unreachable, settings, Abandoned.from_message(said))
    said = again.value.message()
    assert said is not None and said["attempts"][0] == lost.attempts[0] and len(said["attempts"]) == 2

    # The message as it was, or naming another attempt: the run is someone's, for all it knows.
    waits = execute(eid, db, settings)
    assert waits.status == "retry" and waits.retry_in > 50, waits
    other = execute(eid, db, settings, Abandoned.from_message({"times": 0, "attempts": ["0" * 16]}))
    assert other.status == "retry" and other.retry_in > 50, other

    # Naming its attempt: taken back at once, not counted as another delivery.
    assert execute(eid, db, settings, Abandoned.from_message(said)) == "succeeded"
    row = db.fetchone("SELECT status, lease_token, deliveries FROM executions WHERE id = %s", (eid,))
    assert row["status"] == "succeeded" and row["deliveries"] == before + 1, row
    evs = db.fetchall("SELECT seq, type, data FROM execution_events WHERE execution_id = %s ORDER BY seq", (eid,))
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    types = [e["type"] for e in evs]
    assert types.count("execution.succeeded") == 1 and types[-1] == "execution.succeeded"
    assert types.count("execution.started") == (1 if case == "claim" else 0)
    resumed = [e["data"] for e in evs if e["type"] == "execution.resumed"]
    assert resumed[-1]["after"] == "database_unavailable", resumed
    assert len(resumed) == (1 if case == "claim" else 2)  # (a takeover: the lost one, then the take-back)
    certs = db.fetchall("SELECT certificate FROM certificates WHERE execution_id = %s ORDER BY seq", (eid,))
    keys = [dict(public_jwk(b64url_decode(k["public_x"])), kid=k["key_id"]) for k in signing_keys.public_keys(db)]
    assert certs and verify_chain([c["certificate"] for c in certs], keys) == []


def test_the_attempts_survive_the_message_round_trip():
    """What the task puts in the retried message reads back the same (a run given up before, and
    the attempts of begins whose answers were lost, the last MAX_ATTEMPTS); malformed values are
    ignored."""
    both = Abandoned("exec_1", 7, 2, ["ab" * 8])
    back = Abandoned.from_message(both.message())
    assert back is not None and (back.run, back.times, back.attempts) == (("exec_1", 7), 2, ("ab" * 8,))
    alone = Abandoned.from_message(Abandoned(None, None, 0, ["cd" * 8, "ef" * 8]).message())
    assert alone is not None and alone.run is None and alone.attempts == ("cd" * 8, "ef" * 8)
    many = Abandoned(None, None, 0, [f"{i:016x}" for i in range(MAX_ATTEMPTS + 3)])
    assert many.attempts[0] == f"{3:016x}" and len(many.attempts) == MAX_ATTEMPTS
    for bad in (None, [], {"times": "x", "attempts": ["a"]}, {"attempts": "a", "times": 1}, {"execution_id": "e"},
                {"times": 1}, {"times": 1, "attempts": [1]}):
        assert Abandoned.from_message(bad) is None
