"""Fixtures for executor tests: the fake LLM vendors (reached through their official SDKs,
configured by the environment variables the SDKs read) and helpers to run an execution."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.llm import FakeLLM
from tests.support import ApiClient, wait_for

TERMINAL = ("succeeded", "blocked", "error", "cancelled")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    fake = FakeLLM()
    env = {"OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": "sk-test-not-real",
           "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-ant-test-not-real"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield fake
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    fake.stop()


def model_name() -> str:
    return f"scripted-{secrets.token_hex(4)}"


def submit(client: ApiClient, **body: Any) -> str:
    r = client.post("/api/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return r.json()["execution_id"]


def wait_terminal(client: ApiClient, execution_id: str, timeout: float = 20.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        e = client.get(f"/api/v1/executions/{execution_id}").json()
        return e if e["status"] in TERMINAL else None

    return wait_for(done, timeout=timeout)


def events(client: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/executions/{execution_id}/events?limit=1000").json()["items"]


def add_doc(client: ApiClient, name: str, content: str, labels: list[str] | None = None) -> str:
    r = client.post("/api/v1/documents", json={"name": name, "content": content, "labels": labels or []})
    assert r.status_code in (200, 201), r.text
    return r.json()["document_id"]


def assert_gapless(evs: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert sum(1 for e in evs if e["type"].split(".")[-1] in TERMINAL and e["type"].startswith("execution.")) == 1
