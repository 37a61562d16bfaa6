"""Fuzzing the request surface: no input may produce a 500, a body outside the envelope, or an
answer the OpenAPI document does not describe.

schemathesis generates requests from our own OpenAPI document and checks the answers against it;
hypothesis throws arbitrary JSON at the intake. Both go over real HTTP to the live server.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

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


# A body over the size limit is refused before it is read: 413 is a rejection too.
_CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]}}})
schema = schemathesis.openapi.from_dict(_spec(), config=_CONFIG)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_operations_keep_the_contract(case, stack, api_key: str) -> None:  # type: ignore[no-untyped-def]
    # the whole stack: an intent that passes the schema is compiled by a worker, not left to time out
    # Our key stands in for the token schemathesis makes up; a case that leaves the header out
    # (a negative case) goes without one and must be refused.
    if "Authorization" in (case.headers or {}):
        case.headers["Authorization"] = f"Bearer {api_key}"
    response = case.call(base_url=stack.url, timeout=30)
    _assert_enveloped(response.status_code, response.text)
    # Every check but one: a schema-valid request may still be refused for what no schema states
    # (an opaque cursor this API did not issue, an intent the compiler cannot read, a guardrails
    # document whose values are inconsistent).
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_stateful_phase_chains_real_ids_through_the_declared_links(stack, api_key: str) -> None:  # type: ignore[no-untyped-def]
    """schemathesis' stateful phase follows the document's links (api/openapi.py): a created
    execution, task, document or workflow flows into the operations that take its id. Every
    check but positive acceptance holds, and the operations that take an id are reached with
    real ones (a 2xx answer). A short run (seconds): every operation's link is checked one by one
    in test_every_operation_with_an_id_is_linked_from_an_answer."""
    from hypothesis import settings as hsettings

    reached: set[tuple[str, str]] = set()
    failures: list[str] = []
    with_ids = {(m.upper(), p) for p, item in _spec()["paths"].items() for m, op in item.items()
                if m in ("get", "post", "put", "patch", "delete")
                and any(x.get("in") == "path" for x in op.get("parameters", []))}

    class Workflow(schema.as_state_machine()):  # type: ignore[misc, valid-type]
        def before_call(self, case):  # type: ignore[no-untyped-def]
            if "Authorization" in (case.headers or {}):
                case.headers["Authorization"] = f"Bearer {api_key}"

        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"base_url": stack.url, "timeout": 30}

        def after_call(self, response, case):  # type: ignore[no-untyped-def]
            super().after_call(response, case)
            if 200 <= response.status_code < 300:
                reached.add((case.method.upper(), case.path))

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
            # Failures are collected, not raised: the scenarios depend on live answers, so
            # hypothesis could not replay one to report it (it would call the data flaky).
            try:  # an answer may be binary (an audit package): only errors are read as text
                _assert_enveloped(response.status_code, response.text if response.status_code >= 400 else "")
                case.validate_response(response, excluded_checks=[positive_data_acceptance],
                                       transport_kwargs=kwargs or None)
            except Exception as exc:  # noqa: BLE001 - every kind of check failure is collected
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc}"[:2000])

    Workflow.run(settings=hsettings(max_examples=20, stateful_step_count=6, deadline=None, derandomize=True,
                                    phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    assert not failures, "\n\n".join(failures[:5])
    assert with_ids & reached, f"no link was followed to a 2xx: {sorted(reached)}"


def test_every_operation_with_an_id_is_linked_from_an_answer(stack, client: ApiClient) -> None:
    """Each operation whose path takes an id is the target of a link from some answer, and
    following the links of real answers (a created document, execution, task, workflow, the
    guardrails) reaches each of them with a real id: no 404."""
    doc = client.get("/api/v1/openapi.json").json()
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()
           if m in ("get", "post", "put", "patch", "delete")}
    with_ids = {k for k, op in ops.items() if any(x.get("in") == "path" for x in op.get("parameters", []))}
    links = {}  # operationRef -> [(source (method, path), status, parameters)]
    for key, op in ops.items():
        for status, response in op.get("responses", {}).items():
            for link in response.get("links", {}).values():
                links.setdefault(link["operationRef"], []).append((key, status, link["parameters"]))
    ref = {k: "#/paths/" + k[1].replace("~", "~0").replace("/", "~1") + "/" + k[0] for k in with_ids}
    assert not [k for k in with_ids if ref[k] not in links], "operations with an id no answer links to"

    # Real answers to start from, then one hop along each link that leaves them.
    answers = {}
    answers[("post", "/api/v1/documents")] = client.post("/api/v1/documents", {"name": "linked", "content": "x"})
    answers[("post", "/api/v1/tasks", "201")] = client.post("/api/v1/tasks", {"task": "Say hello", "provider": "local"})
    answers[("post", "/api/v1/tasks", "200")] = client.post("/api/v1/tasks", {
        "intent": "Tell me if LINK price goes above 200", "entity_scope": "LINK", "delivery": {"type": "notification"}})
    answers[("post", "/api/v1/workflows")] = client.post("/api/v1/workflows", {"stages": [
        {"name": "a", "task": "Say hello", "provider": "local"}]})
    answers[("put", "/api/v1/guardrails")] = client.request("PUT", "/api/v1/guardrails",
                                                            json=client.get("/api/v1/guardrails").json()["document"])
    followed = set()
    for source, response in answers.items():
        assert response.status_code < 300, (source, response.text)
        status = source[2] if len(source) == 3 else str(response.status_code)
        body = response.json()
        for key in with_ids:
            for src, code, params in links[ref[key]]:
                if src != source[:2] or code != status:
                    continue
                values = {}
                for name, expr in params.items():
                    value: Any = body
                    for part in expr.removeprefix("$response.body#/").split("/"):
                        value = value[int(part)] if isinstance(value, list) else value[part]
                    values[name] = value
                path = key[1]
                for name, value in values.items():
                    path = path.replace("{" + name + "}", str(value))
                op = ops[key]
                example = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
                           .get("example", {}) if "requestBody" in op else None)
                r = client.request(key[0].upper(), path, json=example)
                assert r.status_code != 404, (source, key, path, r.text)
                followed.add(key)
    # The operations reached from a create (the rest hang off lists and other answers).
    assert {("get", "/api/v1/documents/{document_id}"), ("get", "/api/v1/executions/{execution_id}"),
            ("post", "/api/v1/executions/{execution_id}/cancel"), ("get", "/api/v1/tasks/{task_id}"),
            ("get", "/api/v1/tasks/{task_id}/alerts"), ("get", "/api/v1/conditions/{condition_id}/versions/{version}"),
            ("post", "/api/v1/conditions/{condition_id}/apply-calibration"),
            ("post", "/api/v1/conditions/{condition_id}/replay"), ("get", "/api/v1/workflows/{workflow_id}"),
            ("get", "/api/v1/guardrails/versions/{revision}")} <= followed


def test_what_schemathesis_found_stays_fixed(client: ApiClient) -> None:
    # an empty limit is not an integer (it was taken as the default while documented as one)
    r = client.get("/api/v1/executions?limit=")
    assert r.status_code == 400 and r.json()["detail"]["code"] == "invalid_limit"
    # /conditions/explain is the explain operation only, not also "the condition named explain"
    r = client.request("OPTIONS", "/api/v1/conditions/explain")
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"OPTIONS", "POST"}
    r = client.get("/api/v1/conditions/explain")
    assert r.status_code == 405 and "message" in r.json()["detail"]
    assert client.get("/api/v1/conditions/explainer").json()["detail"]["code"] == "condition_not_found"


def test_every_operation_documents_auth_and_rate_limit_answers() -> None:
    doc = _spec()
    ops = [(path, method, op) for path, item in doc["paths"].items() if path.startswith("/api/v1/")
           for method, op in item.items() if method in ("get", "post", "put", "patch", "delete")]
    assert len(ops) > 30
    for path, method, op in ops:
        assert {"401", "429"} <= set(op["responses"]), (method, path)
        if "requestBody" in op:
            assert {"400", "413"} <= set(op["responses"]), (method, path)
