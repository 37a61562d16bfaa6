"""``GET /ws/notifications?after=<notification_id>``: a workspace's notifications, live.

Auth: ``Authorization: Bearer <api key>``, or the short-lived token from
``GET /api/v1/notifications/stream`` (``?token=``, for clients that cannot set headers).
Replays stored notifications with an id after ``after`` (oldest first), then streams new ones
from the process's one fan-out hub (pattern ``notifications:*``). The stream has no end: the
client closes it.

No duplicate: ids already sent are remembered (notification ids are time-ordered but created by
several workers, so a later publish may carry a smaller id; a set, not a high-water mark). No
gap: after the hub reconnects (RESYNC) the store is read again from the connect-time ``after``.
A client more than 1 MiB behind, or whose replay cannot be read (PostgreSQL down), is closed with
1013, its reason naming the ``after`` to reconnect with (the highest id it was sent).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg2
from flask import Blueprint, Flask, g, request

from api.fanout import KEYCHECK, RESYNC, Message
from api.services import Services, services
from api.ws import BoundedSender, _workspace_for, key_revoked, sock, stream_state
from shared.errors import BadRequest, ServiceUnavailable
from shared.store import notifications

log = logging.getLogger(__name__)
bp = Blueprint("ws_notifications", __name__)
PAGE = 500
RESOURCE = "notifications"  # what a notifications stream token is issued for
MAX_REMEMBERED = 10_000


def init_app(app: Flask, svc: Services) -> None:  # noqa: ARG001 - same signature as the other ws modules
    app.register_blueprint(bp)


@bp.before_request
def _authorize() -> None:
    after = request.args.get("after", "")
    if len(after) > 64 or "\x00" in after:
        raise BadRequest("after must be a notification id", code="invalid_after")
    g.ws_workspace_id = _workspace_for(services(), RESOURCE)
    g.ws_after = after


@sock.route("/ws/notifications", bp=bp)
def notification_stream(ws: Any) -> None:
    sender = BoundedSender(ws, f"notifications of {g.ws_workspace_id}")
    NotificationStream(ws, services(), g.ws_workspace_id, g.ws_after, key_id=g.ws_key_id, sender=sender).run()


class NotificationStream:
    def __init__(self, ws: Any, svc: Services, workspace_id: str, after: str, *, key_id: str | None = None,
                 sender: BoundedSender | None = None) -> None:
        self.ws, self.db, self.workspace_id, self.after = ws, svc.db, workspace_id, after
        self.svc, self.key_id = svc, key_id
        self.sender = sender or BoundedSender(ws, f"notifications of {workspace_id}")
        self.sent: set[str] = set()
        self.newest = after  # the highest id sent: where a client closed for falling behind resumes
        self.done = False
        self.sub: Any = None
        self.owed = 0  # bytes taken from the subscription and not yet sent
        self.state = stream_state()

    def run(self) -> None:
        sub = self.sub = self.state.hub.subscribe(notifications.channel_for(self.workspace_id))  # before the replay
        try:
            if not self._catch_up():
                return
            while self.ws.connected and not self.done:
                items = sub.get()  # [] at least every hub tick: lets us notice a closed client
                if self.ws.input_buffer:
                    self.ws.input_buffer.clear()
                self.owed = sum(len(i.text) for i in items if isinstance(i, Message))
                for item in items:
                    if isinstance(item, Message):
                        self.owed -= len(item.text)
                    if item is RESYNC:
                        if not self._catch_up():
                            return
                    elif item is KEYCHECK:
                        if key_revoked(self.svc, self.key_id):
                            self.ws.close(1008, "the API key of this stream was revoked")
                            return
                    elif isinstance(item, Message):
                        nid = item.payload.get("notification_id")
                        if isinstance(nid, str) and nid > self.after:
                            self._send(nid, item.text)
                    if self.done:
                        return
        finally:
            self.state.hub.unsubscribe(sub)

    def _catch_up(self) -> bool:
        if not self.after:  # a fresh client wants new notifications, not the history (GET pages it)
            return True
        cursor = self.after
        while True:
            try:
                with self.state.db_gate:
                    page = notifications.list_after(self.db, self.workspace_id, cursor, PAGE)
            except (psycopg2.Error, ServiceUnavailable):
                if self.ws.connected:  # where to resume: the highest id sent, as for a client behind
                    self.ws.close(1013, f"notifications temporarily unavailable; reconnect with after={self.newest}")
                return False
            for n in page:
                self._send(n["notification_id"], json.dumps(n, separators=(",", ":")))
                if self.done:
                    return False
            if len(page) < PAGE:
                return True
            cursor = page[-1]["notification_id"]

    def _send(self, nid: str, text: str) -> None:
        if nid in self.sent:
            return
        if len(self.sent) >= MAX_REMEMBERED:
            self.sent.clear()
        sent = self.sender.send(text, self.owed + (self.sub.pending_bytes if self.sub is not None else 0))
        if sent == "behind":
            self.done = True
            self.sender.close(1013, f"client too far behind; reconnect with after={self.newest}")
        elif sent == "gone":
            self.done = True
        else:
            self.sent.add(nid)
            self.newest = max(self.newest, nid)
