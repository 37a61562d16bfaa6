"""The agent loop: model → tool calls → Guard.verify → certificate + tool, or refusal → … → answer.

Exactly-once in effect under redelivery (``acks_late`` + ``reject_on_worker_lost``):

- One runner per execution: a lease on the row (workers/ownership.py, shared/store/runs.py). The
  claim bumps the run's fencing token; every step's guarded write checks it and pushes the
  expiry forward, and the process's monitor renews it while the run waits on its model. No
  connection, transaction or lock is held between steps: a step takes a pooled connection for its
  one statement and gives it back. A worker that dies stops renewing; once the lease has expired
  the redelivered message (or the sweep's) takes the run over under a new token, so the dead
  worker's late writes, if any, are refused. A run taken ``max_deliveries`` times without ending
  ends ``error``/``worker_lost``. A run whose step meets a database failure is given up by its
  process (nothing of it goes on) and its message sent again saying so (:class:`Abandoned`): that
  message takes it back under a new token as soon as the database answers, not after the lease.
- Which run a message drives is the fair-share scheduler's choice (runs.begin): the oldest queued
  run of the waiting workspace with the fewest running.
- State is persisted per step in ``executions.state`` (conversation, pending tool calls,
  certificate chain head, names from the record). A step is one transaction, written by one
  guarded statement (``runs.write_step``): the guard decision's events, the certificate or
  violation, the new state and, on the last step, the terminal status with its follow-ups, so a
  step either happened once or not at all and is redone from the saved state. A database tool
  runs inside that transaction before the write; the first such call of a model answer is run in
  the answer's own step (a resume before that commit asks the model again).
- Network tools cannot join the transaction: the call is certified and marked ``started`` in
  one commit, run, then completed in a second. On resume an ``http_get`` is simply fetched
  again; an ``http_post`` whose outcome is unknown is not repeated (the model is told why).
- The write is guarded by ``status = 'running' AND NOT cancel_requested``: a cancel that
  arrived meanwhile undoes the step and ends the run ``cancelled``; one terminal state, one
  terminal event.

Budget and the step bound are checked before every model call. The model call runs beside the
run, which waits for its answer, a cancel (the monitor sees it within a second), a lost lease or
the run's time limit, whichever comes first: a cancelled run ends at once and the late answer is
dropped. A provider's rate limit or overload is retried after its ``retry-after`` (capped
backoff otherwise), each wait shown as an ``llm.retrying`` event.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import psycopg2
import psycopg2.extras
from celery.exceptions import SoftTimeLimitExceeded

from guard import Policy, SigningKey, load_policy
from shared import events, outbox
from shared.config import Settings
from shared.db import OUTAGE_ERRORS
from shared.logs import execution_id_var
from shared.store import documents, policy_documents, runs
from workers import ownership, pricing, runtime, signing, tools
from workers.providers import make_provider
from workers.providers.base import MAX_OUTPUT_TOKENS, Completion, Provider, ProviderError
from workers.steps import StepResult, judge_and_run, process_call, shown_result

log = logging.getLogger(__name__)

MAX_STEPS = 24  # model calls per run
MAX_CALLS_PER_TURN = 8
# How old the documents read by a run's start may be when its first tool call is judged. Reading
# them then and writing the step are separate statements anyway, so labels always come from a
# moment before the write; this bounds that moment to about what a step takes. A slower model's
# first call reads them again.
DOCUMENTS_FRESH_S = 0.1

SYSTEM_PROMPT = (
    "You are an agent working inside a governed workspace. Use the tools to complete the task. Every tool "
    "call is checked against the '{policy}' compliance policy before it runs; a refused call comes back as a "
    "tool error with the violated rules, so adjust and try another way (for example redact text with "
    "redact_text before sending it). When done, reply with the final answer as plain text."
)


class Stop(Exception):
    """End the run with a terminal status."""

    def __init__(self, status: str, *, result: dict[str, Any] | None = None,
                 error: dict[str, Any] | None = None) -> None:
        super().__init__(status)
        self.status, self.result, self.error = status, result, error


@dataclass
class Run:
    """One execution being driven by this process (the holder of its lease)."""

    id: str
    workspace_id: str
    task: str
    policy: Policy
    provider_name: str
    model: str
    budget_cents: int
    effective_permissions: list[str]
    settings: Settings
    key: SigningKey
    state: dict[str, Any]
    spent: Decimal
    usage: dict[str, Any]
    counts: dict[str, Any]
    db: Any = None
    token: int = 0  # the lease's fencing token
    worker: dict[str, Any] | None = None  # {"host", "pid"}: this process, named on every event
    handle: ownership.Handle | None = None
    deadline: float = float("inf")  # time.monotonic() past which the run ends error/time_limit
    early_documents: tuple[float, list[Any]] | None = None  # (monotonic time read, documents) by the start
    _step: runs.Step | None = None

    def documents(self, cur: Any) -> list[Any]:
        """The workspace's documents (labels and content) for Guard.verify: those the run's start
        read, for the first call judged within DOCUMENTS_FRESH_S of that read (a fast model's
        first tool call saves a round trip), otherwise read now through ``cur``."""
        early, self.early_documents = self.early_documents, None
        if early is not None and time.monotonic() - early[0] <= DOCUMENTS_FRESH_S:
            return early[1]
        return documents.list_all(cur, self.workspace_id)

    @contextmanager
    def step(self, *, transaction: bool = True) -> Iterator[Any]:
        """One step: the body reads (and a database tool writes) through the yielded cursor and
        records what happened with :meth:`emit`, :meth:`certify`, :meth:`refuse` and :meth:`end`;
        on exit all of it is written by one statement (runs.write_step), guarded by the lease's
        token and the cancel flag, and committed. A cancel or takeover seen by that guard undoes
        the whole step. The connection is the pool's for this step only.

        ``transaction=False`` is for a body that only reads: its reads and the write are
        autocommitted, so a step without a statement of its own is a single round trip (no
        BEGIN, no separate COMMIT). Events are published after commit."""
        self._step = step = runs.Step(token=self.token, lease_s=self.settings.lease_s, worker=self.worker)
        try:
            with self.db.connection() as conn:
                conn.autocommit = not transaction
                try:
                    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                        yield cur
                        step.save = {"state": self.state, "spent_cents": self.spent, "usage": self.usage,
                                     "counts": self.counts}
                        written = runs.write_step(cur, self.id, step)
                    if transaction:
                        if written is None:
                            conn.rollback()
                        else:
                            conn.commit()
                except BaseException:
                    if not conn.closed and not conn.autocommit:
                        conn.rollback()
                    raise
                finally:
                    if not conn.closed:
                        if conn.status != psycopg2.extensions.STATUS_READY:
                            conn.rollback()
                        conn.autocommit = False
        finally:
            self._step = None
        if written is None:
            self._interrupted()
        events.publish(_redis(), written, wait=step.terminal is not None)

    def _interrupted(self) -> None:
        """The step's guard refused: cancelled (finish it so, while still the owner) or no
        longer ours to run (ended elsewhere, or taken over under a newer token)."""
        self._cancel_now()  # the stored state stays that of the last committed step

    def _current(self) -> runs.Step:
        if self._step is None:
            raise RuntimeError("outside a step")
        return self._step

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        self._current().events.append((type_, data))

    def certify(self, call_key: str, cert: dict[str, Any]) -> None:
        self._current().certificate = (call_key, cert)

    def refuse(self, call_key: str, tool: str, arguments_sha256: str, violations: list[dict[str, Any]],
               halted: bool) -> None:
        self._current().violation = (call_key, tool, arguments_sha256, violations, halted)

    def end(self, status: str, *, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        """Make this step the terminal one (written with the step's other records)."""
        self._current().terminal = (status, result, error)
        self._current().event_result = shown_result(self, result)  # redacted under hipaa, with its labels

    def tools(self) -> list[dict[str, Any]]:
        from guard import TOOL_PERMISSIONS, TOOL_SPECS

        granted = set(self.effective_permissions)
        return [t for t in TOOL_SPECS if TOOL_PERMISSIONS[t["name"]] in granted]

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` unless the run must stop first (cancel, lost lease, time limit)."""
        handle = self.handle
        until = min(time.monotonic() + seconds, self.deadline)
        while True:
            self.check()
            left = until - time.monotonic()
            if left <= 0:
                self.check()
                return
            if handle is None:
                time.sleep(left)
            else:
                handle.wake.wait(left)
                handle.wake.clear()

    def check(self) -> None:
        """Raise what ends the run now: a cancel, a lost lease, its time limit."""
        handle = self.handle
        if handle is not None and handle.stop is not None:
            if handle.stop == "cancel":
                self._cancel_now()
            raise Stop("gone")
        if time.monotonic() >= self.deadline:
            raise Stop("error", error=TIME_LIMIT_ERROR)

    def _cancel_now(self) -> None:
        """End the run cancelled if it is still ours and running; Stop either way."""
        if not _end_if_owned(self.db, self.id, self.token, "cancelled",
                             {"code": "cancelled", "message": "Cancelled while running"}):
            raise Stop("gone")
        raise Stop("cancelled_done")


def _end_if_owned(db: Any, execution_id: str, token: int, status: str, error: dict[str, Any]) -> bool:
    """End the run ``status`` (its terminal event published) if it is still running under the
    lease ``token``; False when it is not (ended elsewhere, or taken over)."""
    with db.transaction() as cur:
        row = runs.lock(cur, execution_id)
        if row is None or row["status"] != "running" or row["lease_token"] != token:
            return False
        ev = runs.finish(cur, row, status, error=error)
    events.publish(_redis(), [ev])
    return True


TIME_LIMIT_ERROR = {"code": "time_limit", "message": "The execution ran past its time limit"}


def _redis() -> Any:
    """Where events are published: the lean path (pre-packed PUBLISHes, one write per step)."""
    return runtime.redis().lean


def worker_identity(settings: Settings) -> dict[str, Any]:
    """This process as events and the execution record name it."""
    return {"host": settings.hostname or _hostname(), "pid": os.getpid()}


@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    return socket.gethostname()


class Abandoned(Exception):
    """The database failed under a run this process drove (a step's write, a cancel's end, ...):
    nothing can be recorded, so the process stopped driving it, leaving the run ``running`` under
    ``token`` with a lease it no longer renews. The run message is sent again carrying this
    (:meth:`message`), and that message takes the run back as soon as the database answers
    (runs.begin's ``abandoned``) rather than waiting out the lease as for a worker that died, and
    without counting a delivery. Only the token the run still has is honoured: if anyone took the
    run over meanwhile, the message waits like any other. ``times``: how often the run was given
    up so by this message and its retries; past MAX_TAKE_BACKS the message no longer says, so a
    run that fails the same way every time is left to its lease and ``max_deliveries`` like one
    that kills its worker.

    ``attempts``: the database failed under the message's own first statement (runs.begin), whose
    outcome is then unknown: it may have committed a claim or a takeover whose answer was lost,
    leaving a run under a lease nobody renews. Each begin records a random id of its own with the
    lease it takes; the message comes back naming it, with those of its earlier begins that
    failed so (the last MAX_ATTEMPTS: through an outage, a begin whose statement committed may be
    followed by several that never reached the database), and takes back a run whose lease one of
    them took (runs.begin's ``lost_attempts``). ``execution_id`` and ``token`` are then those the
    message carried before, if any (the run it was taking back, still given up if the lost
    statement never ran)."""

    def __init__(self, execution_id: str | None, token: int | None, times: int = 1,
                 attempts: Sequence[str] = ()) -> None:
        said = f"execution {execution_id} given up under token {token}" if execution_id else "a run claim's answer lost"
        super().__init__(f"{said}: the database failed")
        self.execution_id, self.token, self.times = execution_id, token, times
        self.attempts = tuple(attempts)[-MAX_ATTEMPTS:]

    def message(self) -> dict[str, Any] | None:
        if self.times > MAX_TAKE_BACKS:
            return None
        said: dict[str, Any] = {"times": self.times}
        if self.execution_id is not None and self.token is not None:
            said.update(execution_id=self.execution_id, token=self.token)
        if self.attempts:
            said["attempts"] = list(self.attempts)
        return said

    @classmethod
    def from_message(cls, data: Any) -> Abandoned | None:
        """The message's ``abandoned`` kwarg read back; None when absent or not of that shape."""
        try:
            attempts = data.get("attempts") or []
            if not isinstance(attempts, list) or not all(isinstance(a, str) for a in attempts):
                attempts = []
            if "execution_id" in data:
                return cls(str(data["execution_id"]), int(data["token"]), int(data["times"]), attempts)
            if attempts:
                return cls(None, None, int(data["times"]), attempts)
        except (AttributeError, TypeError, KeyError, ValueError):
            pass
        return None

    @property
    def run(self) -> tuple[str, int] | None:
        """(execution id, token) of the run given up, when the message names one."""
        if self.execution_id is None or self.token is None:
            return None
        return self.execution_id, self.token

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its fields (Celery may pickle exceptions)
        return (type(self), (self.execution_id, self.token, self.times, self.attempts))


MAX_TAKE_BACKS = 10
MAX_ATTEMPTS = 16  # lost begins a message remembers (Abandoned.attempts)


@dataclass(frozen=True)
class Outcome:
    """What one run message did: ``status`` for logs and tests; ``retry_in`` when the message must
    come back later (a run it drove is still under a live lease, or runs wait behind a cap)."""

    status: str
    retry_in: float | None = None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.status == other
        return isinstance(other, Outcome) and (self.status, self.retry_in) == (other.status, other.retry_in)

    def __hash__(self) -> int:
        return hash(self.status)


def execute(ticket: str, db: Any, settings: Settings, abandoned: Abandoned | None = None) -> Outcome:
    """Handle one run message named ``ticket``: drive the run it owns now (see runs.begin) to a
    terminal state, or leave it to the worker whose lease is live. ``abandoned``: what the
    message's previous delivery gave up on a database failure (see :class:`Abandoned`). Raises
    Abandoned when the database fails under the run it drives."""
    worker = worker_identity(settings)
    attempt = secrets.token_hex(8)  # recorded with any lease this begin takes (see Abandoned.attempts)
    lost = abandoned.attempts if abandoned is not None else ()
    try:
        with db.autocommit() as cur:
            begun = runs.begin(cur, ticket, worker=worker, lease_s=settings.lease_s, gate=_SUSPECTS,
                               abandoned=abandoned.run if abandoned is not None else None, attempt=attempt,
                               lost_attempts=lost)
    except OUTAGE_ERRORS as exc:
        # Unknown whether the statement committed (a claim or a takeover whose answer was lost):
        # the message comes back naming this attempt beside the earlier ones, and takes back what
        # any of them may have taken. (Not a give-up of a run this process drove: ``times`` stays
        # as the message had it.)
        before = abandoned.run if abandoned is not None else None
        raise Abandoned(*(before or (None, None)), abandoned.times if abandoned is not None else 0,
                        (*lost, attempt)) from exc
    if begun.row is None:
        return Outcome("retry" if begun.retry_in is not None else "nothing_to_run", begun.retry_in)
    given_up = abandoned.times if begun.recovered and abandoned is not None else 0  # by this message, so far
    try:
        return _drive(begun, worker, db, settings, given_up)
    finally:
        if begun.isolated:
            _SUSPECTS.release()


class _Gate:
    """At most one suspect run (its workers died twice: see runs.SUSPECT_AFTER) in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()


_SUSPECTS = _Gate()


def _drive(begun: runs.Begun, worker: dict[str, Any], db: Any, settings: Settings, given_up: int) -> Outcome:
    row = begun.row
    execution_id_var.set(row["id"])
    mon = ownership.monitor(lambda: db, settings.lease_s)
    handle = mon.own(row["id"], begun.token)
    try:
        return Outcome(_execute_owned(begun, handle, worker, db, settings))
    except OUTAGE_ERRORS as exc:
        # Nothing of the run goes on in this process (the failure ended its step); its lease is
        # no longer renewed (released below), and the message that comes back takes it back.
        raise Abandoned(row["id"], begun.token, given_up + 1) from exc
    finally:
        mon.release(handle)
        events.flush(_redis())  # every publish of the run confirmed (normally the terminal one did)
        if row["webhook_url"] or row["workflow_id"]:
            # The terminal step wrote outbox rows (webhook delivery, workflow advance): wake the
            # relay now that they are committed instead of leaving them to its next poll.
            outbox.wake(runtime.redis().client)


def _initial_state(task: str, queued: dict[str, Any] | None = None) -> dict[str, Any]:
    # A workflow stage is queued with the labels of the outputs in its task (shared/store/workflows.py).
    carried = {k: v for k, v in (queued or {}).items() if k in ("labels", "input_labels")}
    return {"messages": [{"role": "user", "content": task}], "step": 0, "pending": [], "cert_seq": 0,
            "prev_hash": None, "record_names": [], **carried}


def _begin(begun: runs.Begun, db: Any, settings: Settings) -> tuple[dict[str, Any], SigningKey] | None:
    """What runs.begin found: the run to drive (started now, or taken over with its saved state),
    or None when it must not run on (it was taken too many times: ended worker_lost)."""
    row = begun.row
    assert row is not None
    if begun.event is not None:
        events.publish(_redis(), [begun.event], wait=False)
    if begun.event is not None and begun.event["type"] == "execution.started":
        row["state"] = _initial_state(row["task"], row["state"])
    elif begun.deliveries > settings.max_deliveries:
        # Its worker died every time it was taken (the same step kills the process): stop here.
        _end_if_owned(db, row["id"], begun.token, "error", {
            "code": "worker_lost",
            "message": f"The worker running this execution was lost {begun.deliveries - 1} times; it was not "
                       "started again"})
        return None
    elif not (row["state"] or {}).get("messages"):
        row["state"] = _initial_state(row["task"], row["state"])  # started, but no step was saved: begin afresh
    return row, signing.key_for_run(db, settings, begun.signing_key)


def _execute_owned(begun: runs.Begun, handle: ownership.Handle, worker: dict[str, Any], db: Any,
                   settings: Settings) -> str:
    runnable = _begin(begun, db, settings)
    if runnable is None:
        return "worker_lost"
    row, key = runnable
    execution_id = row["id"]
    provider_name = row["provider"] or "local"
    policy = load_policy(row["compliance_policy"])
    policy_documents.record(db, policy.name, policy.version, policy.document)  # once per process
    if policy.version != row["policy_version"]:
        # A rolling deploy: the record (and so its audit package) names the version actually applied.
        log.warning("execution %s was accepted under %s v%s; this worker applies v%s", execution_id,
                    policy.name, row["policy_version"], policy.version)
        db.execute("UPDATE executions SET policy_version = %s WHERE id = %s", (policy.version, execution_id))
    run = Run(id=execution_id, workspace_id=row["workspace_id"], task=row["task"],
              policy=policy, provider_name=provider_name,
              model=row["model"] or "local-planner-1", budget_cents=row["budget_cents"],
              effective_permissions=row["effective_permissions"], settings=settings,
              key=key, state=row["state"], spent=Decimal(row["spent_cents"]),
              usage=dict(row["usage"] or {}), counts=dict(row["counts"] or {}), db=db, token=begun.token,
              worker=worker, handle=handle, deadline=time.monotonic() + settings.executions_time_limit_s,
              early_documents=(time.monotonic(), begun.documents) if begun.documents is not None else None)
    try:
        provider = make_provider(provider_name, settings)
        while True:
            _one_step(run, provider)
    except Stop as stop:
        if stop.status in ("gone", "cancelled_done"):
            return stop.status
        if stop.status == "finished":
            return str((stop.result or {}).get("status"))
        return _finish(run, stop)
    except ProviderError as exc:
        return _finish(run, Stop("error", error={"code": exc.code, "message": exc.message}))
    except SoftTimeLimitExceeded:
        return _finish(run, Stop("error", error=TIME_LIMIT_ERROR))
    except OUTAGE_ERRORS:
        raise  # the database is gone: nothing can be recorded; given up (_drive), its message sent again
    except Exception as exc:
        log.exception("execution %s failed", execution_id)
        return _finish(run, Stop("error", error={"code": "internal_error",
                                                 "message": f"{type(exc).__name__} in the executor"}))


def _finish(run: Run, stop: Stop) -> str:
    try:
        with run.step(transaction=False):
            run.end(stop.status, result=stop.result, error=stop.error)
    except Stop as again:  # cancelled or already terminal meanwhile
        return again.status
    return stop.status


def _one_step(run: Run, provider: Provider) -> None:
    run.check()
    state = run.state
    if state["pending"]:
        call = state["pending"][0]
        res: StepResult = process_call(run, call)
        if res.finished is not None:
            raise Stop("finished", result={"status": res.finished})
        return
    if state["step"] >= MAX_STEPS:
        raise Stop("error", error={"code": "max_steps_exceeded",
                                   "message": f"No final answer after {MAX_STEPS} model calls"})
    # No separate cancel check here: the step just committed (or the start) was guarded by it.
    completion = _call_model(run, provider)
    cost = pricing.cost_cents(run.model, completion.input_tokens, completion.output_tokens,
                              run.settings.default_price_per_mtok_cents)
    calls = completion.tool_calls[:MAX_CALLS_PER_TURN]
    # The first call, when it runs in the database (not a network tool), is judged and run in the
    # same step as the answer that asked for it: one statement and one commit instead of two. Until
    # that commit nothing of either happened; a resume calls the model again.
    merged = bool(calls) and calls[0]["name"] not in tools.EXTERNAL
    outcome: StepResult | None = None
    with run.step(transaction=merged and calls[0]["name"] in tools.WRITES) as cur:
        run.spent += cost
        u = run.usage
        u["input_tokens"] = u.get("input_tokens", 0) + completion.input_tokens
        u["output_tokens"] = u.get("output_tokens", 0) + completion.output_tokens
        u["llm_calls"] = u.get("llm_calls", 0) + 1
        state["step"] += 1
        state["messages"].append({"role": "assistant", "content": completion.text,
                                  "tool_calls": [{"id": c["id"], "name": c["name"], "arguments": c["arguments"]}
                                                 for c in calls]})
        state["pending"] = [{"id": c["id"], "name": c["name"], "arguments": c["arguments"], "step": state["step"]}
                            for c in calls]
        run.emit("llm.completed", {
            "step": state["step"], "provider": run.provider_name, "model": run.model,
            "input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens,
            "cost_cents": float(cost), "spent_cents": float(run.spent), "tool_calls": [c["name"] for c in calls],
            "stop_reason": completion.stop_reason})
        if not calls:  # the final answer: the same statement ends the run
            run.end("succeeded", result={"output": completion.text or ""})
        elif merged:
            outcome = judge_and_run(run, state["pending"][0], cur)
    if not calls:
        raise Stop("finished", result={"status": "succeeded"})
    if outcome is not None and outcome.finished is not None:
        raise Stop("finished", result={"status": outcome.finished})


def _call_model(run: Run, provider: Provider) -> Completion:
    system = SYSTEM_PROMPT.format(policy=run.policy.name)
    specs = run.tools()
    # Reserve before the call: the prompt we are about to send plus the most it may answer.
    est_in = pricing.estimate_tokens(len(system) + len(str(run.state["messages"])) + len(str(specs)))
    estimate = pricing.cost_cents(run.model, est_in, MAX_OUTPUT_TOKENS, run.settings.default_price_per_mtok_cents)
    if run.spent + estimate > run.budget_cents:
        raise Stop("blocked", result={"output": None, "reason": "budget_exceeded"}, error={
            "code": "budget_exceeded",
            "message": f"The next model call (about {estimate.quantize(Decimal('0.01'), ROUND_CEILING)} cents) would "
                       f"exceed the budget: spent {run.spent.quantize(Decimal('0.01'))} of {run.budget_cents} cents"})

    def call() -> Completion:
        return provider.complete(model=run.model, system=system, messages=run.state["messages"], tools=specs)

    attempt = 0
    while True:
        run.check()
        try:
            return call() if provider.name == "local" else _ask(run, call)
        except ProviderError as exc:
            if not exc.transient:
                raise
            attempt += 1
            if attempt >= MAX_PROVIDER_ATTEMPTS:
                raise
            delay = retry_delay(exc, attempt)
            if time.monotonic() + delay >= run.deadline:
                raise ProviderError(exc.code, f"{exc.message} (gave up after {attempt} attempts: the next one would "
                                              "come after the run's time limit)", transient=False) from None
            with run.step(transaction=False):
                run.emit("llm.retrying", {"step": run.state["step"] + 1, "attempt": attempt, "delay_s": delay,
                                          "code": exc.code, "message": exc.message[:300]})
            run.wait(delay)


# Transient provider errors (rate limits, overload, timeouts, connection failures) are retried
# after the provider's own retry-after when it sends one, else after a capped exponential backoff;
# always within the run's time limit. The wait is a sleep of the run alone (under the gevent pool a
# parked greenlet), cut short by a cancel.
MAX_PROVIDER_ATTEMPTS = 12
RETRY_BASE_S = 0.25
RETRY_CAP_S = 30.0


def retry_delay(exc: ProviderError, attempt: int) -> float:
    if exc.retry_after is not None:  # the provider's word, in full: a run that cannot wait that long ends
        return round(max(exc.retry_after, 0.0), 3)
    return round(min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_CAP_S) * (0.8 + 0.4 * random.random()), 3)


def _ask(run: Run, call: Callable[[], Completion]) -> Completion:
    """``call()`` beside the run, which waits for the answer or for what ends it first (a cancel,
    a lost lease, its time limit): a cancelled run does not wait for a model that takes 30 s."""
    handle = run.handle
    if handle is None:
        return call()
    box: dict[str, Any] = {}

    def ask() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the run's own thread below
            box["error"] = exc
        finally:
            box["done"] = True
            handle.wake.set()

    handle.wake.clear()
    threading.Thread(target=ask, name=f"model-{run.id}", daemon=True).start()
    while "done" not in box:
        run.check()
        handle.wake.wait(max(0.0, run.deadline - time.monotonic()))
        handle.wake.clear()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


__all__ = ["execute", "Run", "Stop", "Outcome"]
