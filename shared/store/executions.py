"""Agent executions: the record, its outbox row and its first event, written together."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.db import Database, Json, Prepared
from shared.events import event_dict, list_events
from shared.paging import keyset_page

TERMINAL = frozenset({"succeeded", "blocked", "error", "cancelled"})
STATUSES = ("queued", "running", *sorted(TERMINAL))

RUN_TASK = "workers.executions.run"

_COLUMNS = (
    "id, workspace_id, task, status, compliance_policy, policy_version, provider, model, budget_cents,"
    " spent_cents, requested_permissions, effective_permissions, denied_permissions, webhook_url, result,"
    " error, usage, counts, event_count, cancel_requested, created_at, started_at, finished_at, updated_at, worker,"
    # What the run carries from labelled content (workers/steps.py), and the names it has read
    # from the record (to redact views of it under hipaa).
    " COALESCE(state->'labels', '[]'::jsonb) AS labels, COALESCE(state->'record_names', '[]'::jsonb) AS record_names"
)


@dataclass(frozen=True)
class NewExecution:
    id: str
    workspace_id: str
    task: str
    compliance_policy: str
    policy_version: str
    provider: str | None
    model: str | None
    budget_cents: int
    requested_permissions: list[str] | None
    effective_permissions: list[str]
    denied_permissions: list[dict[str, Any]]
    webhook_url: str | None
    queued_event: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Execution:
    id: str
    workspace_id: str
    task: str
    status: str
    compliance_policy: str
    policy_version: str
    provider: str | None
    model: str | None
    budget_cents: int
    spent_cents: Decimal
    requested_permissions: list[str] | None
    effective_permissions: list[str]
    denied_permissions: list[dict[str, Any]]
    webhook_url: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    usage: dict[str, Any]
    counts: dict[str, Any]
    event_count: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    worker: dict[str, Any] | None = None  # {"host", "pid"} of the worker that last took the run
    labels: list[str] = field(default_factory=list)
    record_names: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


# One statement, one round trip: the executions, their first events and their outbox rows, for
# any number of executions (the API's intake writes concurrent requests together: see
# shared/groupcommit.py). Rows arrive as one JSON array, so the statement text never changes.
# (The relay is woken through Redis after commit, not NOTIFY: NOTIFY takes a global lock at
# commit that halves commit throughput under concurrency.)
_INSERT = Prepared("""
WITH r AS (
  SELECT * FROM jsonb_to_recordset(%(rows)s) AS r(
    id text, workspace_id text, task text, compliance_policy text, policy_version text, provider text,
    model text, budget_cents integer, requested_permissions jsonb, effective_permissions jsonb,
    denied_permissions jsonb, webhook_url text, queued_event jsonb)
), e AS (
  INSERT INTO executions (id, workspace_id, task, status, compliance_policy, policy_version, provider,
                          model, budget_cents, requested_permissions, effective_permissions,
                          denied_permissions, webhook_url, event_count)
  SELECT id, workspace_id, task, 'queued', compliance_policy, policy_version, provider, model, budget_cents,
         nullif(requested_permissions, 'null'), effective_permissions, denied_permissions, webhook_url, 1
    FROM r
), ev AS (
  INSERT INTO execution_events (execution_id, seq, type, data)
  SELECT id, 1, 'execution.queued', queued_event FROM r
), o AS (
  INSERT INTO outbox (task_name, args, queue, publish_after)
  SELECT %(task_name)s, jsonb_build_array(id), 'executions', now() + make_interval(secs => %(grace)s) FROM r
  RETURNING id AS outbox_id, args->>0 AS id
)
SELECT id, outbox_id FROM o
""")


def insert_many(cur: Any, news: list[NewExecution], *, publish_after_s: float | None = None) -> list[int]:
    """Write the executions (with first event and outbox row each); their run messages' outbox
    row ids, in order.

    ``publish_after_s``: the caller publishes the run messages itself after commit (the API's
    dispatcher), so the relay leaves the rows alone for that long. None: the relay publishes."""
    rows = [{"id": n.id, "workspace_id": n.workspace_id, "task": n.task, "compliance_policy": n.compliance_policy,
             "policy_version": n.policy_version, "provider": n.provider, "model": n.model,
             "budget_cents": n.budget_cents, "requested_permissions": n.requested_permissions,
             "effective_permissions": n.effective_permissions, "denied_permissions": n.denied_permissions,
             "webhook_url": n.webhook_url, "queued_event": n.queued_event} for n in news]
    _INSERT.execute(cur, {"rows": Json(rows), "task_name": RUN_TASK, "grace": publish_after_s})
    outbox_ids = {r["id"]: r["outbox_id"] for r in cur.fetchall()}
    return [outbox_ids[n.id] for n in news]


def insert(cur: Any, new: NewExecution, *, publish_after_s: float | None = None) -> int:
    """One execution (see :func:`insert_many`); its run message's outbox row id."""
    return insert_many(cur, [new], publish_after_s=publish_after_s)[0]


# Executions that should have moved by now: queued longer than `queued_s` (their message was lost),
# or running under a lease that expired (their worker is gone; `running_s` covers rows written
# before leases existed). Each gets a fresh outbox row: its message takes the run over
# (shared/store/runs.begin). `updated_at` is touched so the next pass waits another interval. A
# second message for a run that is in fact alive is harmless: the lease and the guarded writes
# make it a no-op, or it starts the next queued run.
_REQUEUE = f"""
WITH stale AS (
  UPDATE executions SET updated_at = now()
   WHERE id IN (SELECT id FROM executions
                 WHERE (status = 'queued' AND updated_at < now() - make_interval(secs => %(queued_s)s))
                    OR (status = 'running' AND updated_at < now() - make_interval(secs => %(lease_s)s)
                        AND (lease_expires_at < now()
                             OR (lease_expires_at IS NULL
                                 AND updated_at < now() - make_interval(secs => %(running_s)s))))
                 ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  RETURNING id
), o AS (
  INSERT INTO outbox (task_name, args, queue) SELECT '{RUN_TASK}', jsonb_build_array(id), 'executions' FROM stale
)
SELECT id FROM stale
"""


def requeue_stale(db: Database, *, queued_s: float, running_s: float, lease_s: float = 30.0,
                  limit: int = 500) -> list[str]:
    """Re-enqueue executions whose message was lost (a broker that dropped it, a purge) or whose
    worker died (an expired lease); returns their ids. Run periodically by the beat
    (workers.maintenance.requeue_stale)."""
    with db.autocommit() as cur:
        cur.execute(_REQUEUE, {"queued_s": queued_s, "running_s": running_s, "lease_s": lease_s, "limit": limit})
        return [r["id"] for r in cur.fetchall()]


# Queued runs without a message. A run message can be lost outright: kombu's Redis transport
# pops a message (BRPOP) and records it as unacknowledged in a second command, so a Redis that
# stops between the two, or a connection that breaks while the worker holds it only in memory,
# leaves neither a queued nor an unacknowledged copy. Every queued run has one message somewhere:
# in the outbox (not yet published), in the broker's queue, or delivered and on its way to a run
# (unacknowledged, young, and not the message of a running run, i.e. no running run has its name
# as ticket). A delivered message that is old and drives no running run is not counted: its
# worker died or lost its connection, and it comes back only after the broker's visibility
# timeout (an hour by default). So when the queued runs outnumber those messages, the difference
# lost theirs: that many of the oldest queued runs (queued for at least `min_age_s`, touched so
# the next pass waits as long) get a new message. A miscount errs safe: a message too many starts
# the next queued run or finds nothing to do; one too few leaves the run to the `queued_s` sweep.
_MESSAGE_COUNTS = """
SELECT (SELECT count(*) FROM executions WHERE status = 'queued') AS queued,
       (SELECT count(*) FROM outbox WHERE dispatched_at IS NULL AND queue = 'executions') AS unpublished,
       (SELECT count(*) FROM unnest(%(delivered)s::text[]) AS m(ticket)
         WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.ticket = m.ticket AND e.status = 'running'))
         AS in_transit
"""

_REQUEUE_UNMESSAGED = f"""
WITH lost AS (
  UPDATE executions SET updated_at = now()
   WHERE id IN (SELECT id FROM executions
                 WHERE status = 'queued' AND NOT cancel_requested
                   AND updated_at < now() - make_interval(secs => %(min_age_s)s)
                 ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED)
  RETURNING id
), o AS (
  INSERT INTO outbox (task_name, args, queue) SELECT '{RUN_TASK}', jsonb_build_array(id), 'executions' FROM lost
)
SELECT id FROM lost
"""


def requeue_unmessaged(db: Database, queued_messages: int, delivered: list[str], *, min_age_s: float) -> list[str]:
    """Give a new message to queued runs that lost theirs. ``queued_messages``: run messages in
    the broker's queue; ``delivered``: the runs named by the run messages delivered lately and
    not yet acknowledged (the caller leaves out old ones). Returns the runs given a message."""
    with db.autocommit() as cur:
        cur.execute(_MESSAGE_COUNTS, {"delivered": delivered})
        c = cur.fetchone()
        missing = int(c["queued"]) - (queued_messages + int(c["unpublished"]) + int(c["in_transit"]))
        if missing <= 0:
            return []
        cur.execute(_REQUEUE_UNMESSAGED, {"n": missing, "min_age_s": min_age_s})
        return [r["id"] for r in cur.fetchall()]


def get(db: Database, workspace_id: str, execution_id: str) -> Execution | None:
    row = db.fetchone(f"SELECT {_COLUMNS} FROM executions WHERE id = %s AND workspace_id = %s",
                      (execution_id, workspace_id))
    return Execution(**row) if row else None


def get_any(cur: Any, execution_id: str, *, lock: bool = False) -> Execution | None:
    """Worker-side read (no workspace filter: the id came from our own queue)."""
    cur.execute(f"SELECT {_COLUMNS} FROM executions WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                (execution_id,))
    row = cur.fetchone()
    return Execution(**row) if row else None


def list_page(db: Database, workspace_id: str, *, status: str | None, after_id: str | None,
              limit: int) -> tuple[list[Execution], bool, int]:
    filters = ("status = %s",) if status is not None else ()
    with db.transaction() as cur:
        rows, has_more, total = keyset_page(cur, "executions", _COLUMNS, workspace_id, filters=filters,
                                            params=(status,) if status is not None else (),
                                            after_id=after_id, limit=limit)
    return [Execution(**r) for r in rows], has_more, total


def events_page(db: Database, workspace_id: str, execution_id: str, *, after: int,
                limit: int) -> list[dict[str, Any]] | None:
    with db.transaction() as cur:
        cur.execute("SELECT 1 FROM executions WHERE id = %s AND workspace_id = %s", (execution_id, workspace_id))
        if cur.fetchone() is None:
            return None
        return list_events(cur, execution_id, after=after, limit=limit)


def count_by_status(db: Database) -> dict[str, int]:
    rows = db.fetchall("SELECT status, count(*) AS n FROM executions GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


__all__ = ["Execution", "NewExecution", "TERMINAL", "STATUSES", "RUN_TASK", "insert", "get", "get_any",
           "list_page", "events_page", "count_by_status", "event_dict"]
