"""SQL for a running execution: its per-step state, certificates, violations, the terminal
transition (with its webhook delivery enqueued in the same transaction), and cancel.

Shared by the executor (workers/) and the cancel endpoint (api/), which is why the terminal
transition lives here rather than in either.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2

from shared.db import Json, Prepared
from shared.events import event_dict
from shared.ids import new_id
from shared.store import documents
from shared.store.executions import TERMINAL

DELIVERY_TASK = "workers.delivery.execution_webhook"
ADVANCE_TASK = "workers.workflows.advance"  # a stage's end advances its workflow


def lock(cur: Any, execution_id: str) -> dict[str, Any] | None:
    """The row, locked for this transaction (serialises the executor with cancel)."""
    cur.execute("SELECT id, workspace_id, status, cancel_requested, state, spent_cents, usage, counts, webhook_url,"
                " lease_token FROM executions WHERE id = %s FOR UPDATE", (execution_id,))
    return cur.fetchone()


# Run ownership is a lease on the row (see workers/ownership.py): `lease_token` is the fencing
# token every step's guarded write checks, `lease_expires_at` the moment another worker may take the
# run over. No lock or connection is held between steps.

_RUN_COLUMNS = """e.id, e.workspace_id, e.task, e.status, e.compliance_policy, e.policy_version, e.provider,
       e.model, e.budget_cents, e.spent_cents, e.effective_permissions, e.state, e.usage, e.counts,
       e.cancel_requested, e.webhook_url, e.workflow_id"""

_SIGNING_KEY = """LEFT JOIN LATERAL (SELECT key_id, encrypted_seed FROM signing_keys
                      WHERE retired_at IS NULL AND source = 'generated') k ON true"""

# These statements run on generic plans (Prepared(generic_plan=True)), each made once per
# connection with the table sizes of that moment: on a fresh database a handful of rows, where
# the indexes of `executions` all cost about the same. So each lookup is written, and the indexes
# kept (migration 0015), for one plan to win at any size: the ticket lookup states its status
# through a subquery so that only executions_ticket serves it; the capped-workspace probe is one
# LATERAL ... LIMIT 1 per capped workspace (not a semi-join hashing every queued run); and the
# claim updates the row it locked by its ctid (a TID scan, not a full scan of a partial index that
# merely contains it).
# What a run message (a "ticket") finds when it arrives: a run it was driving before (a
# redelivery: its worker died), and the state of the run it names.
_LOOK_SQL = """
SELECT o.id AS own_id, o.live AS own_live, o.left_s AS own_left_s, o.deliveries AS own_deliveries,
       o.token AS own_token, o.attempt AS own_attempt,
       n.status AS named_status, n.live AS named_live, n.deliveries AS named_deliveries,
       EXISTS (SELECT 1 FROM workspaces s
                 CROSS JOIN LATERAL (SELECT 1 FROM executions q
                                      WHERE q.workspace_id = s.id AND q.status = 'queued' LIMIT 1) q
                WHERE s.max_running_executions IS NOT NULL) AS capped_waiting
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT id, COALESCE(lease_expires_at > now(), false) AS live, deliveries,
                            EXTRACT(EPOCH FROM lease_expires_at - now())::float8 AS left_s,
                            lease_token AS token, lease_attempt AS attempt
                       FROM executions WHERE ticket = %(ticket)s AND status = (SELECT 'running'::text)
                      LIMIT 1) o ON true
  LEFT JOIN LATERAL (SELECT status, COALESCE(lease_expires_at > now(), false) AS live, deliveries
                       FROM executions WHERE id = %(ticket)s) n ON true
"""

# Fair share: the next run to start is the oldest queued run of the waiting workspace with the
# fewest running (ties: the workspace waiting longest), skipping workspaces at their
# max_running_executions. So a burst from one workspace never delays another's runs by more than
# the next free slot, and a workspace alone takes every slot. Workspaces with queued runs are found
# with a loose index scan (executions_queued_fair); running counts read executions_workspace_status_id,
# for the waiting workspaces only, and only where they decide something: with one workspace waiting
# and no cap on it there is nothing to compare (a burst of one workspace's runs started each claim
# counting all its running runs, a fifth of the claim's time with 800 running).
# The claim takes the run's lease and writes its execution.started event in the same statement,
# and returns the active signing key and the workspace's documents (see Run.documents). started_at
# is the moment of the update, not the transaction's start: a capped claim's transaction begins
# before it waits for CAP_LOCK, and two claims recorded their starts in the opposite order of the
# runs they took (the oldest first).
_CLAIM_SQL = f"""
WITH RECURSIVE {{look}}w(workspace_id) AS (
  (SELECT workspace_id FROM executions WHERE status = 'queued' ORDER BY workspace_id LIMIT 1)
  UNION ALL
  SELECT (SELECT q.workspace_id FROM executions q
           WHERE q.status = 'queued' AND q.workspace_id > w.workspace_id ORDER BY q.workspace_id LIMIT 1)
    FROM w WHERE w.workspace_id IS NOT NULL
), r AS (
  SELECT w.workspace_id, s.max_running_executions AS cap,
         CASE WHEN s.max_running_executions IS NOT NULL
                   OR (SELECT count(*) FROM w w2 WHERE w2.workspace_id IS NOT NULL) > 1
              THEN (SELECT count(*) FROM executions x WHERE x.workspace_id = w.workspace_id AND x.status = 'running')
              ELSE 0 END AS n,
         (SELECT min(q.id) FROM executions q WHERE q.workspace_id = w.workspace_id AND q.status = 'queued') AS oldest
    FROM w JOIN workspaces s ON s.id = w.workspace_id
), c AS (
  SELECT workspace_id, n, oldest FROM r WHERE cap IS NULL OR (%(capped)s::boolean AND n < cap)
), t AS (
  SELECT e.id, e.ctid FROM executions e
   WHERE e.status = 'queued' AND NOT e.cancel_requested
     AND e.workspace_id = (SELECT workspace_id FROM c ORDER BY n, oldest LIMIT 1){{gate}}
   ORDER BY e.id LIMIT 1 FOR UPDATE SKIP LOCKED
), u AS (
  UPDATE executions SET status = 'running', started_at = clock_timestamp(), updated_at = now(),
         event_count = event_count + 1, lease_token = lease_token + 1,
         lease_expires_at = now() + make_interval(secs => %(lease_s)s), ticket = %(ticket)s,
         deliveries = deliveries + 1, worker = %(worker)s::jsonb, lease_attempt = %(attempt)s
   WHERE ctid = (SELECT ctid FROM t) AND id = (SELECT id FROM t) AND status = 'queued'
  RETURNING id, workspace_id, event_count, provider, model, lease_token, deliveries
), ev AS (
  INSERT INTO execution_events (execution_id, seq, type, data)
  SELECT id, event_count, 'execution.started',
         jsonb_build_object('provider', provider, 'model', model, 'worker', %(worker)s::jsonb) FROM u
  RETURNING execution_id, seq, type, at, data
)
SELECT {{look_columns}}(SELECT count(*) FROM w WHERE workspace_id IS NOT NULL) AS waiting,
       (SELECT count(*) FROM c) AS eligible,
       u.lease_token, u.deliveries, {_RUN_COLUMNS},
       ev.seq AS ev_seq, ev.at AS ev_at, ev.data AS ev_data,
       k.key_id AS key_id, k.encrypted_seed AS key_encrypted_seed, dd.docs
  FROM {{look_from}}
  LEFT JOIN u ON true
  LEFT JOIN executions e ON e.id = u.id
  LEFT JOIN ev ON true
  {_SIGNING_KEY}
  LEFT JOIN LATERAL (SELECT json_agg(d ORDER BY d.id) AS docs
                       FROM (SELECT {documents.COLUMNS} FROM documents
                              WHERE workspace_id = u.workspace_id
                              ORDER BY id LIMIT {documents.CONTEXT_LIMIT}) d) dd ON true
"""
_CLAIM = Prepared(_CLAIM_SQL.format(look="", gate="", look_columns="", look_from="(SELECT 1) one"),
                  generic_plan=True)

# A run message's first statement: the LOOK and, when it finds the common case (no run of this
# ticket to take over, the named run not orphaned, no capped workspace waiting), the claim too,
# in one round trip instead of two. Otherwise the claim part starts nothing and begin() goes on as
# with a LOOK alone.
_LOOK_CLAIM = Prepared(_CLAIM_SQL.format(
    look=f"look AS ({_LOOK_SQL}), ",
    gate="\n     AND (SELECT own_id IS NULL AND (named_status IS DISTINCT FROM 'running' OR named_live)"
         " AND NOT capped_waiting FROM look)",
    look_columns="row_to_json(look) AS look, ", look_from="look"), generic_plan=True)

# Take over a running run whose lease has expired (its worker is gone): a new token fences the old
# owner out, and an execution.resumed event says who took it and how many times it has been taken.
# Or, with `abandoned`, a run its previous owner gave up under that token when the database failed
# under it (see workers/executor.Abandoned): taken back at once rather than after the lease it
# left running, and not counted as a delivery (its worker did not die; max_deliveries and the
# suspect gate are about runs that kill their workers). The event says so ("after").
_TAKEOVER = Prepared(f"""
WITH u AS (
  UPDATE executions SET lease_token = lease_token + 1, updated_at = now(),
         lease_expires_at = now() + make_interval(secs => %(lease_s)s), ticket = %(ticket)s,
         deliveries = deliveries + (lease_token IS DISTINCT FROM %(abandoned)s::bigint)::int,
         worker = %(worker)s::jsonb, event_count = event_count + 1, lease_attempt = %(attempt)s
   WHERE id = %(id)s AND status = 'running'
     AND (lease_expires_at IS NULL OR lease_expires_at <= now() OR lease_token = %(abandoned)s::bigint)
  RETURNING id, event_count, lease_token, deliveries, (lease_token - 1 = %(abandoned)s::bigint) IS TRUE AS recovered
), ev AS (
  INSERT INTO execution_events (execution_id, seq, type, data)
  SELECT id, event_count, 'execution.resumed',
         jsonb_build_object('worker', %(worker)s::jsonb, 'delivery', deliveries)
         || CASE WHEN recovered THEN '{{"after": "database_unavailable"}}'::jsonb ELSE '{{}}'::jsonb END FROM u
  RETURNING execution_id, seq, type, at, data
)
SELECT u.lease_token, u.deliveries, u.recovered, {_RUN_COLUMNS},
       ev.seq AS ev_seq, ev.at AS ev_at, ev.data AS ev_data,
       k.key_id AS key_id, k.encrypted_seed AS key_encrypted_seed
  FROM u JOIN executions e ON e.id = u.id
  LEFT JOIN ev ON true
  {_SIGNING_KEY}
""", generic_plan=True)


@dataclass
class Begun:
    """What a run message found (see :func:`begin`)."""

    row: dict[str, Any] | None  # the run this message now owns (its lease taken), as it was before
    token: int = 0  # the fencing token of that lease
    event: dict[str, Any] | None = None  # execution.started (a start) or execution.resumed (a takeover)
    deliveries: int = 0  # how many times the run has been taken, this time included
    signing_key: tuple[str, str] | None = None  # (key_id, encrypted seed) of the active generated key
    documents: list[documents.Document] | None = None  # the workspace's, read by a start (not a takeover)
    retry_in: float | None = None  # nothing owned: come back after this long (a lease still live, or a cap)
    isolated: bool = False  # taken as a suspect: the caller's isolation gate is held until the run ends
    recovered: bool = False  # taken back after its owner gave it up on a database failure (``abandoned``)


def _owned(row: dict[str, Any], type_: str) -> Begun:
    seq, at, data = row.pop("ev_seq"), row.pop("ev_at"), row.pop("ev_data")
    key_id, seed = row.pop("key_id"), row.pop("key_encrypted_seed")
    docs = row.pop("docs", None)
    token, deliveries = row.pop("lease_token"), row.pop("deliveries")
    recovered = bool(row.pop("recovered", False))
    row.pop("waiting", None), row.pop("eligible", None)
    event = (event_dict({"execution_id": row["id"], "seq": seq, "type": type_, "at": at, "data": data})
             if seq is not None else None)
    return Begun(row, int(token), event, int(deliveries), (key_id, seed) if key_id else None,
                 documents.from_json(docs or []) if type_ == "execution.started" else None, recovered=recovered)


def takeover(cur: Any, execution_id: str, *, ticket: str, worker: Any, lease_s: float,
             abandoned: int | None = None, attempt: str | None = None) -> Begun | None:
    """Take over a running run whose lease has expired, or that was given up under the token
    ``abandoned`` (see _TAKEOVER); None when it is not (or no longer) so."""
    _TAKEOVER.execute(cur, {"id": execution_id, "ticket": ticket, "worker": Json(worker), "lease_s": lease_s,
                            "abandoned": abandoned, "attempt": attempt})
    row = cur.fetchone()
    return _owned(row, "execution.resumed") if row is not None else None


CAPPED_RETRY_S = 2.0  # how soon a message that found only capped workspaces waiting looks again

# A run whose worker died twice is a suspect: it may be what kills its workers (a poison run), and
# every run that shared a process with it died with it. A suspect is taken over only by a process
# running no other suspect (the caller's isolation gate), so a poison run's deaths stop taking
# the same innocent runs along: those it killed twice run their third delivery away from it and
# finish, while it alone reaches max_deliveries and ends worker_lost.
SUSPECT_AFTER = 2
SUSPECT_RETRY_S = 1.0


class Gate(Protocol):
    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


def _take_over(cur: Any, execution_id: str, deliveries: int, gate: Gate | None, *, ticket: str, worker: Any,
               lease_s: float, abandoned: int | None = None, attempt: str | None = None) -> Begun | None:
    """takeover(), a suspect only through ``gate``; a Begun with retry_in when the gate is busy."""
    held = gate if gate is not None and deliveries >= SUSPECT_AFTER else None
    if held is not None and not held.try_acquire():
        return Begun(None, retry_in=SUSPECT_RETRY_S)
    try:
        taken = takeover(cur, execution_id, ticket=ticket, worker=worker, lease_s=lease_s, abandoned=abandoned,
                         attempt=attempt)
    except BaseException:
        if held is not None:
            held.release()
        raise
    if taken is None:
        if held is not None:
            held.release()
        return None
    taken.isolated = held is not None
    return taken


def begin(cur: Any, ticket: str, *, worker: Any, lease_s: float, gate: Gate | None = None,
          abandoned: tuple[str, int] | None = None, attempt: str | None = None,
          lost_attempts: Collection[str] = ()) -> Begun:
    """What a run message (named ``ticket``, its execution's id) owns now. In order:

    1. the run it was driving before, when its worker died (a redelivery): taken over once its
       lease has expired, otherwise come back when it will have (a suspect, one whose workers
       died twice, only through ``gate``: see SUSPECT_AFTER); at once when the message says its
       previous delivery gave that run up under the token it still has (``abandoned``, (id,
       token): the database failed under it, see workers/executor.Abandoned), or when the lease
       it has was taken by one of ``lost_attempts``: an earlier begin of this message whose statement
       committed but whose answer never came back (the connection dropped), so that nobody
       drives the run under it;
    2. the run it names, when that run is running with an expired lease (its worker is gone and
       the sweep re-sent its message);
    3. the next queued run by fair share (not necessarily the one it names: every message is a
       slot's worth of work, and each queued run has one message).

    Nothing to own: ``row`` is None, with ``retry_in`` set when runs wait only behind their
    workspace's cap. A lease taken here is recorded with ``attempt`` (the caller's random id for
    this call), for a later ``lost_attempts`` should the answer be lost. Run in autocommit: each
    statement is its own transaction."""
    _LOOK_CLAIM.execute(cur, {"ticket": ticket, "worker": Json(worker), "lease_s": lease_s, "capped": False,
                              "attempt": attempt})
    claimed = cur.fetchone()
    look = claimed.pop("look")  # what the LOOK found, one JSON object beside the claim's columns
    if claimed["lease_token"] is not None:  # the common case, claimed by the first statement
        return _owned(claimed, "execution.started")
    if look["own_id"] is not None:
        given_up = abandoned[1] if abandoned is not None and abandoned[0] == look["own_id"] else None
        if look["own_attempt"] is not None and look["own_attempt"] in lost_attempts:
            given_up = int(look["own_token"])  # our own earlier claim or takeover, its answer lost
        if not look["own_live"] or given_up is not None:
            taken = _take_over(cur, look["own_id"], look["own_deliveries"], gate, ticket=ticket, worker=worker,
                               lease_s=lease_s, abandoned=given_up, attempt=attempt)
            if taken is not None:
                return taken
        if look["own_live"]:  # another owner's (a newer token): it is theirs while they renew it
            return Begun(None, retry_in=max(0.5, float(look["own_left_s"] or 0.0) + 0.5))
    orphan = look["named_status"] == "running" and not look["named_live"]  # its worker is gone
    if orphan:
        taken = _take_over(cur, ticket, look["named_deliveries"], gate, ticket=ticket, worker=worker,
                           lease_s=lease_s, attempt=attempt)
        if taken is not None:
            return taken
    capped = bool(look["capped_waiting"])
    if not capped:
        if look["own_id"] is None and not orphan:  # the first statement's claim ran and found nothing
            if not claimed["waiting"]:
                return Begun(None)
            if not claimed["eligible"]:
                return Begun(None, retry_in=CAPPED_RETRY_S)
        return _claim(cur, ticket, worker=worker, lease_s=lease_s, capped=False, attempt=attempt)
    # A capped workspace has runs waiting: claims that may start one go one at a time, each in a
    # transaction holding CAP_LOCK, so each counts the running runs after the previous one
    # committed (two claims side by side each saw a run fewer, and a workspace capped at 2 ran 3).
    # Claims without the lock pass capped workspaces by.
    cur.execute("BEGIN")
    try:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CAP_LOCK,))
        begun = _claim(cur, ticket, worker=worker, lease_s=lease_s, capped=True, attempt=attempt)
    except BaseException:
        with contextlib.suppress(psycopg2.Error):
            cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")
    return begun


#: The advisory lock that claims hold while capped workspaces have runs waiting (any number; this
#: one is "warden c" in ASCII).
CAP_LOCK = 0x77617264656E2063


def _claim(cur: Any, ticket: str, *, worker: Any, lease_s: float, capped: bool, attempt: str | None) -> Begun:
    for _ in range(8):  # SKIP LOCKED: a concurrent claim may have taken the row we aimed at
        _CLAIM.execute(cur, {"ticket": ticket, "worker": Json(worker), "lease_s": lease_s, "capped": capped,
                             "attempt": attempt})
        row = cur.fetchone()
        if row["lease_token"] is not None:
            return _owned(row, "execution.started")
        if not row["waiting"]:
            return Begun(None)
        if not row["eligible"]:
            return Begun(None, retry_in=CAPPED_RETRY_S)
    return Begun(None, retry_in=0.1)


# A live lease pushed forward (the owners' heartbeat, one statement for all of a process's runs);
# returns the runs still owned.
_RENEW = """
UPDATE executions e SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
  FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS h(id, token)
 WHERE e.id = h.id AND e.lease_token = h.token AND e.status = 'running'
RETURNING e.id
"""

# Of a process's runs, those it must stop driving: a cancel was requested, or it lost the run
# (ended meanwhile, or its lease was taken over under a newer token).
_INTERRUPTED = """
SELECT e.id, e.cancel_requested, e.status, e.lease_token = h.token AS owned
  FROM unnest(%(ids)s::text[], %(tokens)s::bigint[]) AS h(id, token) JOIN executions e ON e.id = h.id
 WHERE e.cancel_requested OR e.status <> 'running' OR e.lease_token <> h.token
"""


def renew(cur: Any, owned: dict[str, int], lease_s: float) -> set[str]:
    cur.execute(_RENEW, {"ids": list(owned), "tokens": list(owned.values()), "lease_s": lease_s})
    return {r["id"] for r in cur.fetchall()}


def interrupted(cur: Any, owned: dict[str, int]) -> dict[str, str]:
    """{id: "cancel" | "lost"} for the runs in ``owned`` (id → token) that must stop."""
    cur.execute(_INTERRUPTED, {"ids": list(owned), "tokens": list(owned.values())})
    return {r["id"]: ("cancel" if r["cancel_requested"] and r["owned"] and r["status"] == "running" else "lost")
            for r in cur.fetchall()}


@dataclass
class Step:
    """What one executor step writes, in one statement (see :func:`write_step`)."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    save: dict[str, Any] = field(default_factory=dict)  # state, spent_cents, usage, counts
    certificate: tuple[str, dict[str, Any]] | None = None  # (call_key, certificate)
    violation: tuple[str, str, str, list[dict[str, Any]], bool] | None = None  # call_key, tool, sha, list, halted
    terminal: tuple[str, dict[str, Any] | None, dict[str, Any] | None] | None = None  # status, result, error
    token: int | None = None  # the writer's lease (fencing) token: the executor's steps
    lease_s: float = 30.0  # how far the write pushes the lease's expiry
    worker: dict[str, Any] | None = None  # {"host", "pid"} added to every event's data
    event_result: dict[str, Any] | None = None  # the result as the terminal event shows it (default: result)


_SAVABLE = ("state", "spent_cents", "usage", "counts")


@functools.lru_cache(maxsize=64)
def _step_statement(save: tuple[str, ...], certificate: bool, violation: bool, terminal: bool,
                    running_only: bool) -> Prepared:
    return Prepared(_step_sql(save, certificate, violation, terminal, running_only), generic_plan=True)


def _step_sql(save: tuple[str, ...], certificate: bool, violation: bool, terminal: bool, running_only: bool) -> str:
    sets = [f"{c} = %({c})s" for c in save if c != "state"]
    if "state" in save:
        sets.append("state = COALESCE(%(state)s, state)")
    if terminal:
        # The ticket goes with the end: executions_ticket then holds only runs that started and
        # did not end, rather than every execution ever run (nothing looks up a finished run by it).
        sets += ["status = %(status)s", "result = %(result)s", "error = %(error)s", "finished_at = now()",
                 "cancel_requested = false", "ticket = NULL"]
    if running_only:  # the executor: its lease's fencing token, which the write renews
        guard = "status = 'running' AND NOT cancel_requested AND lease_token = %(token)s"
        sets.append("lease_expires_at = now() + make_interval(secs => %(lease_s)s)")
    else:
        guard = "status IN ('queued', 'running')"
    parts = [f"""
WITH u AS (
  UPDATE executions SET {", ".join([*sets, "event_count = event_count + %(n)s", "updated_at = now()"])}
   WHERE id = %(id)s AND {guard}
  RETURNING id, workspace_id, workflow_id, webhook_url, spent_cents, counts, event_count - %(n)s AS base
), ev AS (
  INSERT INTO execution_events (execution_id, seq, type, data)
  SELECT u.id, u.base + v.ord, v.type, v.data || %(extra)s::jsonb
    FROM u, unnest(%(types)s::text[], %(datas)s::jsonb[]) WITH ORDINALITY AS v(type, data, ord)"""]
    if terminal:
        # The terminal event carries the final spend and counts as stored.
        parts.append("""
  UNION ALL
  SELECT u.id, u.base + %(n)s, 'execution.' || %(status)s,
         jsonb_build_object('status', %(status)s::text, 'result', %(event_result)s::jsonb, 'error', %(error)s::jsonb,
                            'spent_cents', u.spent_cents::float8, 'counts', u.counts) || %(extra)s::jsonb
    FROM u""")
    parts.append("\n  RETURNING execution_id, seq, type, at, data\n)")
    if certificate:
        parts.append(""", c AS (
  INSERT INTO certificates (id, execution_id, seq, call_key, certificate)
  SELECT %(cert_id)s, u.id, %(cert_seq)s, %(cert_call_key)s, %(cert)s FROM u
)""")
    if violation:
        parts.append(""", vi AS (
  INSERT INTO violations (execution_id, call_key, tool, arguments_sha256, violations, halted)
  SELECT u.id, %(v_call_key)s, %(v_tool)s, %(v_sha)s, %(v_list)s, %(v_halted)s FROM u
)""")
    if terminal:
        # Follow-ups enqueued iff the run ended: the workflow advances; the callback is delivered.
        parts.append(f""", wf AS (
  INSERT INTO outbox (task_name, args, queue)
  SELECT '{ADVANCE_TASK}', jsonb_build_array(u.workflow_id), 'executions' FROM u WHERE u.workflow_id IS NOT NULL
), d AS (
  INSERT INTO webhook_deliveries (id, workspace_id, execution_id, url, event_type, webhook_id)
  SELECT %(dlv_id)s, u.workspace_id, u.id, u.webhook_url, 'execution.completed', %(webhook_id)s
    FROM u WHERE u.webhook_url IS NOT NULL
  ON CONFLICT (execution_id, event_type) WHERE execution_id IS NOT NULL DO NOTHING RETURNING id
), o AS (
  INSERT INTO outbox (task_name, args, queue) SELECT '{DELIVERY_TASK}', jsonb_build_array(d.id), 'delivery' FROM d
)""")
    # The sentinel row (seq 0) says the guarded update happened, even for a step without events.
    parts.append("""
SELECT execution_id, seq, type, at, data FROM ev
UNION ALL SELECT id, 0, NULL, NULL, NULL FROM u""")
    return "".join(parts)


def write_step(cur: Any, execution_id: str, step: Step, *, running_only: bool = True) -> list[dict[str, Any]] | None:
    """Write one step in one statement: the guarded row update (state, spend, counts; terminal
    status), its events with consecutive ``seq`` (numbered from the updated row, so appenders never
    collide), a certificate or violation, and on a terminal step the follow-up outbox rows.

    ``running_only`` guards with "running and no cancel requested" (the executor: a cancel or a
    takeover makes the write a no-op); otherwise any non-terminal state. Returns the events to
    publish after commit, or None when the guard refused and nothing was written."""
    save = tuple(c for c in _SAVABLE if c in step.save)
    params: dict[str, Any] = {
        "id": execution_id, "types": [t for t, _ in step.events], "datas": [Json(d) for _, d in step.events],
        "n": len(step.events) + (1 if step.terminal else 0),
        "extra": Json({"worker": step.worker} if step.worker else {})}
    if running_only:
        if step.token is None:
            raise ValueError("an executor step is written under its lease token")
        params.update(token=step.token, lease_s=step.lease_s)
    for c in save:
        v = step.save[c]
        params[c] = Json(v) if isinstance(v, dict) else v
    if step.certificate is not None:
        call_key, cert = step.certificate
        params.update(cert_id=cert["certificate_id"], cert_seq=cert["seq"], cert_call_key=call_key, cert=Json(cert))
    if step.violation is not None:
        v_call_key, v_tool, v_sha, v_list, v_halted = step.violation
        params.update(v_call_key=v_call_key, v_tool=v_tool, v_sha=v_sha, v_list=Json(v_list), v_halted=v_halted)
    if step.terminal is not None:
        status, result, error = step.terminal
        if status not in TERMINAL:
            raise ValueError(status)
        delivery_id = new_id("dlv")
        shown = step.event_result if step.event_result is not None else result
        params.update(status=status, result=Json(result) if result is not None else None,
                      event_result=Json(shown) if shown is not None else None,
                      error=Json(error) if error is not None else None, dlv_id=delivery_id,
                      webhook_id="msg_" + delivery_id[4:])
    _step_statement(save, step.certificate is not None, step.violation is not None, step.terminal is not None,
                    running_only).execute(cur, params)
    rows = cur.fetchall()
    if not rows:
        return None
    return [event_dict(r) for r in sorted(rows, key=lambda r: r["seq"]) if r["seq"]]


def finish(cur: Any, row: dict[str, Any], status: str, *, result: dict[str, Any] | None = None,
           error: dict[str, Any] | None = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Terminal transition from queued or running inside the caller's transaction, with the one
    terminal event and the follow-ups of :func:`write_step`. Returns the event to publish."""
    step = Step(save={"state": state}, terminal=(status, result, error))
    written = write_step(cur, row["id"], step, running_only=False)
    if not written:
        raise RuntimeError(f"execution {row['id']} is already terminal")
    return written[-1]


def certificates(cur: Any, execution_id: str) -> list[dict[str, Any]]:
    cur.execute("SELECT certificate FROM certificates WHERE execution_id = %s ORDER BY seq", (execution_id,))
    return [r["certificate"] for r in cur.fetchall()]


def violations(cur: Any, execution_id: str) -> list[dict[str, Any]]:
    cur.execute("SELECT call_key, tool, arguments_sha256, violations, halted, created_at FROM violations"
                " WHERE execution_id = %s ORDER BY id", (execution_id,))
    return [{**r, "created_at": r["created_at"].isoformat()} for r in cur.fetchall()]


def request_cancel(cur: Any, workspace_id: str, execution_id: str) -> tuple[str, list[dict[str, Any]]] | None:
    """Cancel: queued → cancelled now; running → cancel_requested (the executor stops before its
    next step). Returns (outcome, events) with outcome ``cancelled``, ``cancel_requested`` or
    ``terminal``; None when there is no such execution in the workspace."""
    cur.execute("SELECT id, workspace_id, status, webhook_url FROM executions WHERE id = %s AND workspace_id = %s"
                " FOR UPDATE", (execution_id, workspace_id))
    row = cur.fetchone()
    if row is None:
        return None
    if row["status"] in TERMINAL:
        return "terminal", []
    if row["status"] == "queued":
        event = finish(cur, row, "cancelled", error={"code": "cancelled", "message": "Cancelled before it started"})
        return "cancelled", [event]
    cur.execute("UPDATE executions SET cancel_requested = true, updated_at = now() WHERE id = %s", (execution_id,))
    return "cancel_requested", []


def webhook_status(cur: Any, execution_id: str) -> dict[str, Any] | None:
    """The execution's callback delivery with its attempts, for the execution JSON."""
    cur.execute("SELECT id, url, webhook_id, status, attempt_count, last_error, delivered_at FROM webhook_deliveries"
                " WHERE execution_id = %s AND event_type = 'execution.completed'", (execution_id,))
    d = cur.fetchone()
    if d is None:
        return None
    cur.execute("SELECT attempt, status_code, error, duration_ms, at FROM webhook_attempts WHERE delivery_id = %s"
                " ORDER BY attempt", (d["id"],))
    attempts = [{**a, "at": a["at"].isoformat()} for a in cur.fetchall()]
    return {"delivery_id": d["id"], "webhook_id": d["webhook_id"], "status": d["status"],
            "attempt_count": d["attempt_count"], "last_error": d["last_error"],
            "delivered_at": d["delivered_at"].isoformat() if d["delivered_at"] else None, "attempts": attempts}
