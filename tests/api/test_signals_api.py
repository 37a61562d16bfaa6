"""POST /api/v1/signals: validation per item (422 names the index, nothing stored), batch size,
duplicates idempotent; alerts and webhook-secret endpoints; workspace isolation."""

from __future__ import annotations

import pytest

from tests.support import ApiClient


def sig(**over):  # type: ignore[no-untyped-def]
    return {"entity": "AAPL", "metric": "price", "value": 1.5, "ts": "2024-01-01T00:00:00Z", **over}


def count(db, ws):  # type: ignore[no-untyped-def]
    return db.fetchone("SELECT count(*) AS n FROM signals WHERE workspace_id = %s", (ws,))["n"]


def test_accepts_and_dedups(server, client, db, workspace):
    batch = [sig(ts=f"2024-01-01T00:00:{i:02d}+00:00", value=i) for i in range(10)]
    r = client.post("/api/v1/signals", json={"signals": batch})
    assert r.status_code == 202 and r.json() == {"accepted": 10, "stored": 10, "duplicates": 0}
    again = client.post("/api/v1/signals", json={"signals": batch + [sig(ts="2024-01-01T00:00:00")]})
    assert again.json() == {"accepted": 11, "stored": 0, "duplicates": 11}  # no offset = UTC
    assert count(db, workspace[0]) == 10


def test_offsets_postgresql_cannot_hold_are_stored_as_utc(server, client, db, workspace):
    # Python takes offsets up to ±24 h, PostgreSQL only ±15:59: this was a 500 (found by schemathesis)
    r = client.post("/api/v1/signals", json={"signals": [sig(ts="2024-01-01T10:00:00-16:48")]})
    assert r.status_code == 202, r.text
    row = db.fetchone("SELECT ts FROM signals WHERE workspace_id = %s", (workspace[0],))
    assert row["ts"].isoformat() == "2024-01-02T02:48:00+00:00"
    # an instant that leaves years 1–9999 in UTC is refused, whichever path checks it
    for batch in ([sig(ts="0001-01-01T00:00:00+05:00")], [sig(), {"entity": "a", "ts": "9999-12-31T23:00:00-05:00"}]):
        r = client.post("/api/v1/signals", json={"signals": batch})
        assert r.status_code == 422, r.text
        assert "ts" in r.json()["detail"]["errors"]["signals"][str(len(batch) - 1)]
    assert count(db, workspace[0]) == 1


@pytest.mark.parametrize(("bad", "field"), [
    ({"value": "1.5"}, "value"), ({"value": True}, "value"), ({"value": None}, "value"),
    ({"ts": "yesterday"}, "ts"), ({"ts": 1700000000}, "ts"), ({"entity": ""}, "entity"),
    ({"metric": "x" * 201}, "metric"), ({"extra": 1}, "extra"),
])
def test_bad_item_names_index_and_stores_nothing(server, client, db, workspace, bad, field):
    batch = [sig(ts=f"2024-01-01T00:00:0{i}Z") for i in range(3)]
    batch[2] = {**batch[2], **bad}
    r = client.post("/api/v1/signals", json={"signals": batch})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "validation_error" and "signals[2]" in detail["message"]
    assert field in detail["errors"]["signals"]["2"]
    assert count(db, workspace[0]) == 0


def test_missing_field_and_nan(server, client, db, workspace):
    item = sig()
    del item["ts"]
    r = client.post("/api/v1/signals", json={"signals": [sig(), item]})
    assert r.status_code == 422 and "ts" in r.json()["detail"]["errors"]["signals"]["1"]
    nan = client.post("/api/v1/signals", data='{"signals": [{"entity": "a", "metric": "m", "value": NaN, '
                                              '"ts": "2024-01-01T00:00:00Z"}]}',
                      headers={"Content-Type": "application/json"})
    assert nan.status_code == 422
    assert count(db, workspace[0]) == 0


@pytest.mark.parametrize("body", [{"signals": []}, {"signals": [sig()] * 1001}, {"signals": "x"}, {}, {"s": []}])
def test_batch_shape(server, client, body):
    assert client.post("/api/v1/signals", json=body).status_code == 422


def test_thousand_is_fine_and_auth_required(server, client):
    batch = [sig(ts=f"2024-01-01T{i // 60 // 60:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(1000)]
    assert client.post("/api/v1/signals", json={"signals": batch}).json()["stored"] == 1000
    assert ApiClient(server.url, None).post("/api/v1/signals", json={"signals": [sig()]}).status_code == 401
    assert client.post("/api/v1/signals", data="[1]", headers={"Content-Type": "application/json"}).status_code == 400


def test_alerts_404_and_secret(server, client):
    assert client.get("/api/v1/tasks/task_nope/alerts").status_code == 404
    first = client.get("/api/v1/webhook-secret").json()["secret"]
    rotated = client.post("/api/v1/webhook-secret/rotate").json()["secret"]
    assert rotated != first and rotated.startswith("whsec_")
    assert client.get("/api/v1/webhook-secret").json()["secret"] == rotated


def test_openapi_lists_the_endpoints(server, client):
    doc = client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/signals", "/api/v1/notifications", "/api/v1/tasks/{task_id}/alerts",
                 "/api/v1/conditions/{condition_id}/replay", "/api/v1/webhook-secret"):
        assert path in doc["paths"], path
    assert "SignalItem" in doc["components"]["schemas"]
