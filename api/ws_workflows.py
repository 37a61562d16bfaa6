"""``GET /ws/workflows/<id>?after=<seq>&token=<t>``: a workflow's stage transitions, replayable,
plus the live events of each stage's execution.

- Workflow events ``{"workflow_id","seq","type","at","data"}`` (``workflow.created``,
  ``stage.started``, ``stage.finished``, ``stage.skipped``, ``workflow.succeeded|failed|cancelled``)
  are stored first, so they are replayed after ``after`` and streamed with no gap and no
  duplicate (a gap or a quiet spell re-reads PostgreSQL), exactly like execution streams.
- Execution events of the stages ``{"execution_id","seq",…,"stage"}`` are replayable too: a
  stage is followed when the stream starts (stages still queued or running), when its
  ``stage.started`` or ``stage.finished`` is sent (replayed or live); following it sends its stored
  events, then its live ones, in ``seq`` order with no gap and no duplicate per execution (a gap
  re-reads PostgreSQL). A stage's events all precede its ``stage.finished``. ``after`` counts
  workflow events only, so a client that reconnects with it may see a running stage's earlier
  events again: deduplicate by ``(execution_id, seq)``.
- After the terminal workflow event the server closes with 1000.

Auth is the same as ``/ws/executions`` (the ``websocket_url`` token, or an API key): 401 without
credentials, 404 for another workspace's workflow. Workflow and stage events come from the
process's one fan-out hub (its patterns include ``workflows:*``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Flask, g, request

from api.fanout import KEYCHECK, RESYNC, Hub, Message, Subscription
from api.services import Services, services
from api.ws import BoundedSender, _workspace_for, key_revoked, sock, stream_state
from shared.errors import BadRequest, NotFound
from shared.events import channel_for as execution_channel
from shared.events import list_events
from shared.store import workflows
from shared.workflow_events import channel_for

bp = Blueprint("ws_workflows", __name__)
TERMINAL = frozenset({"workflow.succeeded", "workflow.failed", "workflow.cancelled"})
POLL_S = 0.1  # the workflow subscription is waited on this long, then the stage subscriptions drained
IDLE_CATCH_UP_S = 15.0


def init_app(app: Flask, svc: Services) -> None:
    app.register_blueprint(bp)


@bp.before_request
def _authorize() -> None:
    workflow_id = (request.view_args or {}).get("workflow_id")
    if workflow_id is None:
        return
    raw_after = request.args.get("after", "0")
    if not raw_after.isdigit() or len(raw_after) > 18:
        raise BadRequest("after must be a non-negative integer (the last seq you have)", code="invalid_after")
    svc = services()
    workspace_id = _workspace_for(svc, workflow_id)
    if workflows.get(svc.db, workspace_id, workflow_id) is None:
        raise NotFound(f"Workflow {workflow_id} not found", code="not_found")
    g.ws_after, g.ws_workspace_id = int(raw_after), workspace_id


@sock.route("/ws/workflows/<workflow_id>", bp=bp)
def workflow_stream(ws: Any, workflow_id: str) -> None:
    hub = stream_state().hub
    sender = BoundedSender(ws, f"workflow {workflow_id}")
    WorkflowStream(ws, services(), hub, workflow_id, g.ws_workspace_id, g.ws_after, key_id=g.ws_key_id,
                   sender=sender).run()


class _Stage:
    """One stage's execution as this stream follows it."""

    def __init__(self, name: str, sub: Subscription) -> None:
        self.name, self.sub, self.last = name, sub, 0


class WorkflowStream:
    def __init__(self, ws: Any, svc: Services, hub: Hub, workflow_id: str, workspace_id: str, after: int, *,
                 key_id: str | None = None, sender: BoundedSender | None = None) -> None:
        self.ws, self.db, self.hub, self.workflow_id, self.last = ws, svc.db, hub, workflow_id, after
        self.sender = sender or BoundedSender(ws, f"workflow {workflow_id}")
        self.sub: Subscription | None = None
        self.owed = 0  # bytes taken from the subscriptions and not yet sent
        self.svc, self.key_id = svc, key_id
        self.workspace_id = workspace_id
        self.stages: dict[str, _Stage] = {}  # execution id → its stage
        self.done = False

    def run(self) -> None:
        sub = self.sub = self.hub.subscribe(channel_for(self.workflow_id))  # before the replay read: no gap
        try:
            found = workflows.get(self.db, self.workspace_id, self.workflow_id)
            if found is not None:
                for s in found[1]:
                    if s["execution_id"] and s["execution_status"] in ("queued", "running"):
                        self._follow(s["execution_id"], s["name"])
            self._catch_up()
            quiet = time.monotonic()
            while not self.done and self.ws.connected:
                items = sub.get(timeout=POLL_S)
                self.owed = sum(len(i.text) for i in items if isinstance(i, Message))
                for item in items:
                    if isinstance(item, Message):
                        self.owed -= len(item.text)
                    if item is RESYNC:
                        self._catch_up()
                    elif item is KEYCHECK:
                        if key_revoked(self.svc, self.key_id):
                            self.done = True
                            self.ws.close(1008, "the API key of this stream was revoked")
                            return
                    elif isinstance(item, Message):
                        self._on_workflow(item)
                    if self.done:
                        return
                self._drain_stages()
                if items:
                    quiet = time.monotonic()
                elif time.monotonic() - quiet > IDLE_CATCH_UP_S:
                    quiet = time.monotonic()
                    self._catch_up()
        finally:
            self.hub.unsubscribe(sub)
            for st in self.stages.values():
                self.hub.unsubscribe(st.sub)

    def _follow(self, execution_id: str, stage: str) -> _Stage:
        st = self.stages.get(execution_id)
        if st is None:
            # Subscribed before the stored events are read: nothing falls between the two.
            st = self.stages[execution_id] = _Stage(stage, self.hub.subscribe(execution_channel(execution_id)))
            self._fill(execution_id, st)
        return st

    def _fill(self, execution_id: str, st: _Stage) -> None:
        """Send the stage's stored events after the last one sent."""
        while not self.done:
            with self.db.transaction() as cur:  # a stage of this (already authorised) workflow
                page = list_events(cur, execution_id, after=st.last, limit=500)
            for ev in page:
                self._send_stage(st, ev)
            if len(page) < 500:
                return

    def _send_stage(self, st: _Stage, ev: dict[str, Any]) -> None:
        if ev["seq"] > st.last and not self.done and self._write(json.dumps({**ev, "stage": st.name},
                                                                            separators=(",", ":"), default=str)):
            st.last = ev["seq"]

    def _drain_stages(self) -> None:
        for execution_id, st in list(self.stages.items()):
            items = st.sub.get(timeout=0)
            self.owed += sum(len(i.text) for i in items if isinstance(i, Message))  # in hand: still behind
            for item in items:
                if isinstance(item, Message):
                    self.owed -= len(item.text)
                if self.done:
                    return
                if item is RESYNC:
                    self._fill(execution_id, st)
                elif isinstance(item, Message):
                    seq = item.payload.get("seq")
                    if not isinstance(seq, int) or seq <= st.last:
                        continue
                    if seq > st.last + 1:
                        self._fill(execution_id, st)
                    self._send_stage(st, item.payload)

    def _on_workflow(self, msg: Message) -> None:
        seq = msg.payload.get("seq")
        if not isinstance(seq, int) or seq <= self.last:
            return
        if seq > self.last + 1:
            self._catch_up()
            if self.done or seq <= self.last:
                return
        self._send(msg.payload)

    def _send(self, ev: dict[str, Any]) -> None:
        data = ev.get("data") or {}
        if ev["type"] in ("stage.started", "stage.finished") and data.get("execution_id"):
            st = self._follow(data["execution_id"], data["stage"])
            if ev["type"] == "stage.finished":
                # The run ended before its stage did: all its events are stored; they go out first.
                self._drain_stages()
                self._fill(data["execution_id"], st)
        if self.done or not self._write(json.dumps(ev, separators=(",", ":"), default=str)):
            return
        self.last = ev["seq"]
        if ev["type"] in TERMINAL:
            self.done = True
            self.ws.close(1000, "workflow finished")

    def _write(self, text: str) -> bool:
        """Send one frame; False (and the stream done) when the client is gone or was closed 1013
        for falling more than 1 MiB behind (resume with ``after`` = the last workflow seq sent)."""
        queued = self.owed + sum(st.sub.pending_bytes for st in self.stages.values())
        sent = self.sender.send(text, queued + (self.sub.pending_bytes if self.sub is not None else 0))
        if sent == "sent":
            return True
        self.done = True
        if sent == "behind":
            self.sender.close(1013, f"client too far behind; reconnect with after={self.last}")
        return False

    def _catch_up(self) -> None:
        while not self.done:
            page = workflows.events_after(self.db, self.workflow_id, self.last, limit=500)
            for ev in page:
                if ev["seq"] > self.last and not self.done:
                    self._send(ev)
            if len(page) < 500:
                return
