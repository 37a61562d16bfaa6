"""Fuzzing the request surface: no input may produce a 500 or a body outside the envelope.

schemathesis generates requests from our own OpenAPI document; hypothesis throws arbitrary JSON
at the intake. Both go over real HTTP to the live server.
"""

from __future__ import annotations

import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ApiClient


def _assert_enveloped(status: int, text: str) -> None:
    assert status < 500 or status in (501, 503), text  # 501/503 are deliberate answers, never a crash
    if status >= 400:
        detail = json.loads(text)["detail"]
        assert isinstance(detail["message"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(
    st.sampled_from(["task", "intent", "compliance_policy", "budget_cents", "permissions", "provider",
                     "model", "webhook_url", "x"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30)
                 | st.floats(allow_nan=False, allow_infinity=False),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                 max_leaves=5),
    max_size=6))
def test_intake_never_500s(client_fixed: ApiClient, body: dict) -> None:
    r = client_fixed.post("/api/v1/tasks", body)
    _assert_enveloped(r.status_code, r.text)
    assert r.status_code in (201, 400, 403, 422, 501, 200)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_500(client_fixed: ApiClient, raw: bytes) -> None:
    r = client_fixed.request("POST", "/api/v1/tasks", data=raw, headers={"Content-Type": "application/json"})
    _assert_enveloped(r.status_code, r.text)


def _spec() -> dict:
    """The document the server serves, built without any service (the factory connects lazily)."""
    from api.app import create_app
    from api.openapi import build_spec
    from shared.config import load_settings

    return build_spec(create_app(load_settings({"WARDEN_LOG_LEVEL": "WARNING"})))


schema = schemathesis.openapi.from_dict(_spec())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_operations_never_500(case, stack, api_key: str) -> None:  # type: ignore[no-untyped-def]
    # the whole stack: an intent that passes the schema is compiled by a worker, not left to time out
    response = case.call(base_url=stack.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    _assert_enveloped(response.status_code, response.text)
