"""/ws/workflows/<id>: stage transitions replayed and streamed (then close 1000), live stage
execution events tagged with their stage, auth like execution streams."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import websocket

from tests.api.test_workflows import SlowServer, fetch, finished, stage
from tests.support import ApiClient


def read_until_close(conn: websocket.WebSocket, timeout: float = 60.0) -> tuple[list[dict[str, Any]], int]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no close within {timeout}s; got {[e.get('type') for e in got]}"
            conn.settimeout(remaining)
            opcode, data = conn.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                got.append(json.loads(data))
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                return got, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
    finally:
        conn.close()


def workflow_events(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in got if "workflow_id" in e]


def assert_complete_stage_streams(got: list[dict[str, Any]], stages: set[str]) -> None:
    """Each stage's execution events: all of them, in seq order, once, before its stage.finished."""
    by_exec: dict[str, list[dict[str, Any]]] = {}
    for i, e in enumerate(got):
        if "stage" in e and "execution_id" in e:
            by_exec.setdefault(e["execution_id"], []).append({**e, "_pos": i})
    assert {evs[0]["stage"] for evs in by_exec.values()} == stages
    finished_at = {e["data"]["execution_id"]: i for i, e in enumerate(got) if e.get("type") == "stage.finished"}
    for execution_id, evs in by_exec.items():
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), [e["type"] for e in evs]
        assert evs[0]["type"] == "execution.queued" and evs[-1]["type"].startswith("execution.")
        assert evs[-1]["type"] in ("execution.succeeded", "execution.error", "execution.blocked",
                                   "execution.cancelled")
        assert evs[-1]["_pos"] < finished_at[execution_id]


def test_live_stream_then_replay(stack, client: ApiClient) -> None:  # type: ignore[no-untyped-def]
    slow = SlowServer(1.0)
    try:
        body = client.post("/api/v1/workflows", {"stages": [
            fetch("a", slow.url), stage("b", "Use {{stages.a.output}}", depends_on=["a"])]}).json()
        got, code = read_until_close(websocket.create_connection(body["websocket_url"], timeout=10))
    finally:
        slow.close()
    assert code == 1000
    wf = workflow_events(got)
    assert [e["seq"] for e in wf] == list(range(1, len(wf) + 1))
    assert [e["type"] for e in wf] == ["workflow.created", "stage.started", "stage.finished", "stage.started",
                                       "stage.finished", "workflow.succeeded"]
    stage_events = [e for e in got if "execution_id" in e and "stage" in e]
    assert {e["stage"] for e in stage_events} == {"a", "b"}
    assert any(e["type"] == "execution.succeeded" and e["stage"] == "b" for e in stage_events)

    assert_complete_stage_streams(got, {"a", "b"})

    # Replayed after the end: the same workflow events and every stage's execution events.
    replay, code = read_until_close(websocket.create_connection(body["websocket_url"], timeout=10))
    assert code == 1000 and workflow_events(replay) == wf
    assert_complete_stage_streams(replay, {"a", "b"})
    assert [e for e in replay if "stage" in e] == stage_events_sorted(got)

    url = body["websocket_url"] + "&after=2"
    again, code = read_until_close(websocket.create_connection(url, timeout=10))
    assert code == 1000 and [e["seq"] for e in workflow_events(again)] == [3, 4, 5, 6]
    assert_complete_stage_streams(again, {"a", "b"})  # a finished after seq 2: its events come again


def stage_events_sorted(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stage events as a replay orders them: stage by stage, each in seq order."""
    evs = [e for e in got if "stage" in e and "execution_id" in e]
    order = {e["execution_id"]: i for i, e in reversed(list(enumerate(evs)))}
    return sorted(evs, key=lambda e: (order[e["execution_id"]], e["seq"]))


def test_auth(stack, server, client: ApiClient, db) -> None:  # type: ignore[no-untyped-def]
    from shared.store import workspaces

    body = client.post("/api/v1/workflows", {"stages": [stage("a")]}).json()
    base = server.url.replace("http://", "ws://") + f"/ws/workflows/{body['workflow_id']}"
    for url, headers, status in [(base, [], 401), (base + "?token=bad", [], 401), (base + "?after=x", [], 400)]:
        try:
            websocket.create_connection(url, timeout=10, header=headers)
            raise AssertionError("connected")
        except websocket.WebSocketBadStatusException as exc:
            assert exc.status_code == status
    ws = workspaces.get_or_create_workspace(db, "wsw-other")
    other = workspaces.create_key(db, ws.id)
    try:
        websocket.create_connection(base, timeout=10, header=[f"Authorization: Bearer {other}"])
        raise AssertionError("connected")
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 404
    finished(client, body["workflow_id"])
