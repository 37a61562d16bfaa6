"""SQL for a running execution: its per-step state, certificates, violations, the terminal
transition (with its webhook delivery enqueued in the same transaction), and cancel.

Shared by the executor (workers/) and the cancel endpoint (api/), which is why the terminal
transition lives here rather than in either.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from shared.db import Json, Prepared
from shared.events import event_dict
from shared.ids import new_id
from shared.store import documents
from shared.store.executions import TERMINAL

DELIVERY_TASK = "workers.delivery.execution_webhook"
ADVANCE_TASK = "workers.workflows.advance"  # a stage's end advances its workflow


def lock(cur: Any, execution_id: str) -> dict[str, Any] | None:
    """The row, locked for this transaction (serialises the executor with cancel)."""
    cur.execute("SELECT id, workspace_id, status, cancel_requested, state, spent_cents, usage, counts, webhook_url"
                " FROM executions WHERE id = %s FOR UPDATE", (execution_id,))
    return cur.fetchone()


# The runner's session-level advisory lock (see workers/executor.py), then queued → running with its
# `execution.started` event, in one statement that also returns the row as it was (so a
# redelivery sees `running` and its saved state), the active generated signing key and, for a run
# started now, the workspace's documents (see Run.documents in workers/executor.py): the start of a
# run is one round trip. Without the lock nothing is written.
#
# A run that ended leaves its lock held on the connection (one round trip less per run): the next
# run started on that connection releases it here, first thing. Nothing is lost by holding it
# meanwhile: a message for a finished run that finds the lock taken sees the terminal status and
# stops (see :func:`begin`).
_BEGIN = Prepared(f"""
WITH r AS MATERIALIZED (SELECT pg_advisory_unlock_all()),
l AS MATERIALIZED (SELECT CASE WHEN (SELECT true FROM r) THEN pg_try_advisory_lock(hashtextextended(%(lock)s, 0))
                          END AS locked),
u AS (
  UPDATE executions SET status = 'running', started_at = now(), updated_at = now(),
         event_count = event_count + 1
   WHERE id = %(id)s AND status = 'queued' AND NOT cancel_requested AND (SELECT locked FROM l)
  RETURNING id, event_count, provider, model
), ev AS (
  INSERT INTO execution_events (execution_id, seq, type, data)
  SELECT id, event_count, 'execution.started', jsonb_build_object('provider', provider, 'model', model) FROM u
  RETURNING execution_id, seq, type, at, data
)
SELECT l.locked, e.id, e.workspace_id, e.task, e.status, e.compliance_policy, e.policy_version, e.provider,
       e.model, e.budget_cents, e.spent_cents, e.effective_permissions, e.state, e.usage, e.counts,
       e.cancel_requested, e.webhook_url, e.workflow_id, ev.seq AS ev_seq, ev.at AS ev_at, ev.data AS ev_data,
       k.key_id AS key_id, k.encrypted_seed AS key_encrypted_seed, dd.docs
  FROM l
  LEFT JOIN executions e ON e.id = %(id)s
  LEFT JOIN ev ON true
  LEFT JOIN LATERAL (SELECT key_id, encrypted_seed FROM signing_keys
                      WHERE retired_at IS NULL AND source = 'generated') k ON true
  LEFT JOIN LATERAL (SELECT json_agg(d ORDER BY d.id) AS docs
                       FROM (SELECT {documents.COLUMNS} FROM documents
                              WHERE workspace_id = e.workspace_id AND ev.seq IS NOT NULL
                              ORDER BY id LIMIT {documents.CONTEXT_LIMIT}) d) dd ON true
""")


def lock_key(execution_id: str) -> str:
    """The key of the advisory lock a runner holds for the whole run (hashtextextended'ed)."""
    return "warden:execution:" + execution_id


@dataclass
class Begun:
    locked: bool  # the advisory lock is now held by this session (False: another runner has it)
    row: dict[str, Any] | None  # the execution as it was before this statement (None: no such execution;
    #                             when not locked, only its status)
    started: dict[str, Any] | None  # the execution.started event when this call started the run
    signing_key: tuple[str, str] | None  # (key_id, encrypted seed) of the active generated key
    documents: list[documents.Document] | None = None  # the workspace's, read by a start (not a resume)


def begin(cur: Any, execution_id: str) -> Begun:
    """Release what an earlier run left held on this connection, take this run's advisory lock
    and start a queued run (or read a running one back). Run in autocommit: the lock is the
    session's, and outlives the statement."""
    _BEGIN.execute(cur, {"id": execution_id, "lock": lock_key(execution_id)})
    row = cur.fetchone()
    locked = bool(row.pop("locked"))
    if row["id"] is None:
        return Begun(locked, None, None, None)
    if not locked:
        return Begun(False, {"id": row["id"], "status": row["status"]}, None, None)
    seq, at, data = row.pop("ev_seq"), row.pop("ev_at"), row.pop("ev_data")
    key_id, seed = row.pop("key_id"), row.pop("key_encrypted_seed")
    docs = row.pop("docs")
    started = (event_dict({"execution_id": execution_id, "seq": seq, "type": "execution.started", "at": at,
                           "data": data}) if seq is not None else None)
    return Begun(True, row, started, (key_id, seed) if key_id else None,
                 documents.from_json(docs or []) if started is not None else None)


@dataclass
class Step:
    """What one executor step writes, in one statement (see :func:`write_step`)."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    save: dict[str, Any] = field(default_factory=dict)  # state, spent_cents, usage, counts
    certificate: tuple[str, dict[str, Any]] | None = None  # (call_key, certificate)
    violation: tuple[str, str, str, list[dict[str, Any]], bool] | None = None  # call_key, tool, sha, list, halted
    terminal: tuple[str, dict[str, Any] | None, dict[str, Any] | None] | None = None  # status, result, error
    event_result: dict[str, Any] | None = None  # the result as the terminal event shows it (default: result)


_SAVABLE = ("state", "spent_cents", "usage", "counts")


@functools.lru_cache(maxsize=64)
def _step_statement(save: tuple[str, ...], certificate: bool, violation: bool, terminal: bool,
                    running_only: bool) -> Prepared:
    return Prepared(_step_sql(save, certificate, violation, terminal, running_only))


def _step_sql(save: tuple[str, ...], certificate: bool, violation: bool, terminal: bool, running_only: bool) -> str:
    sets = [f"{c} = %({c})s" for c in save if c != "state"]
    if "state" in save:
        sets.append("state = COALESCE(%(state)s, state)")
    if terminal:
        sets += ["status = %(status)s", "result = %(result)s", "error = %(error)s", "finished_at = now()",
                 "cancel_requested = false"]
    guard = "status = 'running' AND NOT cancel_requested" if running_only else "status IN ('queued', 'running')"
    parts = [f"""
WITH u AS (
  UPDATE executions SET {", ".join([*sets, "event_count = event_count + %(n)s", "updated_at = now()"])}
   WHERE id = %(id)s AND {guard}
  RETURNING id, workspace_id, workflow_id, webhook_url, spent_cents, counts, event_count - %(n)s AS base
), ev AS (
  INSERT INTO execution_events (execution_id, seq, type, data)
  SELECT u.id, u.base + v.ord, v.type, v.data
    FROM u, unnest(%(types)s::text[], %(datas)s::jsonb[]) WITH ORDINALITY AS v(type, data, ord)"""]
    if terminal:
        # The terminal event carries the final spend and counts as stored.
        parts.append("""
  UNION ALL
  SELECT u.id, u.base + %(n)s, 'execution.' || %(status)s,
         jsonb_build_object('status', %(status)s::text, 'result', %(event_result)s::jsonb, 'error', %(error)s::jsonb,
                            'spent_cents', u.spent_cents::float8, 'counts', u.counts)
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
        "n": len(step.events) + (1 if step.terminal else 0)}
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
