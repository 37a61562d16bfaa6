"""One tool call of the agent loop: events, Guard.verify, certificate or refusal, the tool.

See workers/executor.py for the transaction and resume rules this follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING
from typing import TYPE_CHECKING, Any

from guard import Guard, Policy, ToolCall, VerifyContext, arguments_sha256, display, find_phi, issue_certificate
from guard.model import labels_of
from shared.ids import new_id
from workers import tools

if TYPE_CHECKING:
    from workers.executor import Run

MAX_RECORD_NAMES = 200
_ARG_PREVIEW = 500


@dataclass(frozen=True)
class StepResult:
    finished: str | None = None  # the terminal status when this step ended the run


def _preview(arguments: dict[str, Any], policy: Policy, record_names: tuple[str, ...],
             labels: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Arguments for events: long strings shortened (the certificate carries the full hash).

    Under a policy that keeps PHI in (its ``phi_unredacted`` rule), strings are shown redacted:
    the stream, the stored events and the audit packages built from them are no place for the
    identifiers the policy exists to keep in, whether the call was allowed (redact_text's input)
    or refused for carrying them."""
    redacting = display.redacts(policy, labels)

    def shown(value: Any) -> Any:
        if isinstance(value, str):
            if redacting:
                # The whole string, then the cut: a cut first could split an identifier, and the
                # detectors already read every outbound string in Guard.verify.
                value = display.redact_text(value, record_names)
            return value[:_ARG_PREVIEW] + "…" if len(value) > _ARG_PREVIEW else value
        if isinstance(value, dict):
            return {k: shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v) for v in value]
        return value

    return {k: shown(v) for k, v in arguments.items()}


# Keys of a tool's result summary that are never content (kept as they are in events).
_SUMMARY_KEYS = ("labels", "status", "created", "truncated", "redactions", "content_type")


def shown_result(run: Run, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's terminal ``result`` as its terminal event shows it: redacted under a policy that
    redacts (the record keeps the output itself), with the labels the output carries."""
    if result is None:
        return None
    labels = run.state.get("labels") or []
    out = display.shown(result, run.policy, run.state.get("record_names") or (), keep=("reason",), labels=labels)
    return {**out, "labels": list(labels)} if labels else out


def _input_document(run: Run) -> dict[str, Any] | None:
    """The task as a document carrying the labels of what it was made from (a workflow stage's
    ``{{stages.<name>.output}}``): the Guard judges copies of it as it judges the labelled
    document it came from."""
    labels = run.state.get("input_labels") or []
    return {"labels": list(labels), "content": run.task} if labels else None


# The key the task's own content is judged under; no document name can hold a NUL.
INPUT_KEY = "\x00task-input"


def _context(run: Run, docs: list[Any]) -> VerifyContext:
    by_key: dict[str, dict[str, Any]] = {}
    for d in docs:
        entry = {"labels": d.labels, "content": d.content}
        by_key[d.id] = entry
        by_key[d.name] = entry
    given = _input_document(run)
    if given is not None:
        by_key[INPUT_KEY] = given
        if "phi" in given["labels"] and not run.state.get("input_names"):
            # As if the stage had read the labelled document: the names it states are identifiers.
            names = list(dict.fromkeys([*run.state.get("record_names", []), *_names_from(run.task)]))
            run.state["record_names"] = names[:MAX_RECORD_NAMES]
            run.state["input_names"] = True
    return VerifyContext(
        execution_id=run.id, policy=run.policy, effective_permissions=frozenset(run.effective_permissions),
        budget_cents=run.budget_cents, spent_cents=int(run.spent.to_integral_value(ROUND_CEILING)),
        documents=by_key, record_names=tuple(run.state.get("record_names") or ()))


def _names_from(content: str) -> list[str]:
    """Names the record states ("Patient: Jane Doe", "Mr. Smith"): the HIPAA rule then treats
    them as identifiers anywhere in outbound text, and redact_text removes them."""
    return [content[f.start:f.end] for f in find_phi(content, (), ("name",))]


def _tool_message(call: dict[str, Any], content: dict[str, Any], is_error: bool) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call["id"], "name": call["name"],
            "content": json.dumps(content, ensure_ascii=False), "is_error": is_error}


def _complete(run: Run, call: dict[str, Any], result: dict[str, Any] | None,
              error: tools.ToolError | None) -> None:
    """Record a tool's outcome: event, message back to the model, call popped, counts."""
    state = run.state
    if error is None:
        assert result is not None
        content, ok = result, True
        if call["name"] == "read_document":
            names = list(dict.fromkeys([*state.get("record_names", []), *_names_from(result.get("content", ""))]))
            state["record_names"] = names[:MAX_RECORD_NAMES]
            carried = display.sensitive([*state.get("labels", []), *(result.get("labels") or [])])
            if carried:  # what the run writes or answers from now on is derived from it
                state["labels"] = carried
    else:
        content, ok = {"error": error.code, "message": error.message}, False
    state["messages"].append(_tool_message(call, content, not ok))
    state["pending"].pop(0)
    run.counts["tool_calls"] = run.counts.get("tool_calls", 0) + 1
    summary = ({k: v for k, v in result.items() if k not in ("content", "body", "text", "documents")}
               if result else {"error": content})
    summary = display.shown(summary, run.policy, state.get("record_names") or (), keep=_SUMMARY_KEYS,
                            labels=state.get("labels") or ())
    run.emit("tool.completed", {"call_id": call["id"], "tool": call["name"], "ok": ok, "result": summary})


def call_key(call: dict[str, Any]) -> str:
    return f"{call['step']}:{call['id']}"


def process_call(run: Run, call: dict[str, Any]) -> StepResult:
    """Take the first pending call one step further (see the executor's docstring)."""
    if call.get("started"):
        return _finish_external(run, call, call_key(call), resumed=True)
    # A database-writing tool runs in the step's transaction; any other step is autocommitted reads
    # plus the one guarded write.
    with run.step(transaction=call["name"] in tools.WRITES) as cur:
        result = judge_and_run(run, call, cur)
    if result is None:
        return _finish_external(run, call, call_key(call), resumed=False)
    return result


def judge_and_run(run: Run, call: dict[str, Any], cur: Any) -> StepResult | None:
    """Inside an open step (``run.step()``): the call's events, Guard.verify, then the refusal, or
    the certificate and, for a database tool, the tool itself through ``cur``. None: an external
    call was certified and marked started; it runs after this step commits."""
    key = call_key(call)
    docs = run.documents(cur)
    context = _context(run, docs)
    tc = ToolCall(call["name"], call["arguments"])
    run.emit("tool.requested", {"call_id": call["id"], "tool": call["name"],
                                "arguments": _preview(call["arguments"], context.policy, context.record_names,
                                                      run.state.get("labels") or []),
                                "step": call["step"]})
    decision = Guard.verify(tc, context)
    run.emit("guard.decision", {"call_id": call["id"], **decision.to_dict()})
    if not decision.allowed:
        try:
            digest = arguments_sha256(call["arguments"])
        except (TypeError, ValueError):
            digest = ""
        run.refuse(key, call["name"], digest, decision.violations, decision.halt)
        run.counts["blocked"] = run.counts.get("blocked", 0) + 1
        run.emit("tool.blocked", {"call_id": call["id"], "tool": call["name"],
                                  "violations": decision.violations, "halt": decision.halt})
        if decision.halt:
            # Terminal in the same transaction as the refusal: a resume never re-judges it.
            rules = sorted({v["rule"] for v in decision.violations})
            reason = "budget_exceeded" if "budget_exceeded" in rules else "policy_violation"
            run.state["pending"] = []
            run.end("blocked", result={"output": None, "reason": reason},
                    error={"code": reason, "violations": decision.violations,
                           "message": f"{call['name']} refused by the {run.policy.name} policy"
                                      f" ({', '.join(rules)})"})
            return StepResult(finished="blocked")
        content = {"error": "blocked_by_policy", "violations": decision.violations,
                   "message": "This call was refused by the compliance policy and did not run."}
        run.state["messages"].append(_tool_message(call, content, True))
        run.state["pending"].pop(0)
        return StepResult()
    state = run.state
    if call["name"] == "write_document" and state.get("labels") and _carry_labels(call, context, state["labels"]):
        # Judged as asked; written (and certified) with the labels it carries. More labels never
        # turn an allowed write into a refused one, so the decision holds for what is written.
        tc = ToolCall(call["name"], call["arguments"])
    cert = issue_certificate(run.key, certificate_id=new_id("cert"), execution_id=run.id,
                             seq=state["cert_seq"] + 1, call=tc, decision=decision, policy=run.policy,
                             issued_at=_now(), prev_hash=state["prev_hash"])
    run.certify(key, cert)
    state["cert_seq"], state["prev_hash"] = cert["seq"], cert["hash"]
    run.counts["certificates"] = run.counts.get("certificates", 0) + 1
    run.emit("certificate.issued", {"call_id": call["id"], "tool": call["name"], "certificate": cert})
    if call["name"] in tools.EXTERNAL:
        call["started"] = True  # committed with the certificate; the request runs after commit
        call["certificate_id"] = cert["certificate_id"]
    else:
        ctx = tools.ToolContext(run.workspace_id, run.id, key, run.settings,
                                context.record_names, cur, docs)
        try:
            _complete(run, call, tools.run(call["name"], call["arguments"], ctx), None)
        except tools.ToolError as exc:
            _complete(run, call, None, exc)
        return StepResult()
    return None


def _carry_labels(call: dict[str, Any], context: VerifyContext, carried: list[str]) -> bool:
    """A document written by a run that holds labelled content carries those labels too, on top
    of the ones it asked for (or, overwriting without asking, the ones the document has). True
    when the call's arguments changed: the certificate then hashes what is written."""
    arguments = call["arguments"]
    asked = arguments.get("labels")
    if isinstance(asked, list):
        base = [str(label) for label in asked]
    else:
        base = sorted(labels_of(context.document(arguments.get("name"))))
    if set(carried) <= set(base):
        return False
    call["arguments"] = {**arguments, "labels": [*base, *(label for label in carried if label not in base)]}
    return True


def _finish_external(run: Run, call: dict[str, Any], call_key: str, *, resumed: bool) -> StepResult:
    result: dict[str, Any] | None = None
    error: tools.ToolError | None = None
    if resumed and call["name"] == "http_post":
        error = tools.ToolError("outcome_unknown", "The worker stopped while this request was in flight; it was not "
                                                   "sent again to avoid a duplicate side effect.")
    else:
        ctx = tools.ToolContext(run.workspace_id, run.id, call_key, run.settings)
        try:
            result = tools.run(call["name"], call["arguments"], ctx)
        except tools.ToolError as exc:
            error = exc
    with run.step(transaction=False):
        _complete(run, call, result, error)
    return StepResult()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


__all__ = ["process_call", "judge_and_run", "shown_result", "StepResult"]
