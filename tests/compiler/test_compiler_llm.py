"""The optional LLM classifier hook, through the official OpenAI and Anthropic SDKs against the
local wire-format double (tests/fakes/llm.py), as the executor's providers are tested."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from compiler import compile_intent
from compiler.llm import cached_classifier, make_llm_classifier
from tests.fakes.llm import FakeLLM


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.stop()


def _client(provider: str, fake: FakeLLM) -> Any:
    if provider == "openai":
        return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test-not-real", max_retries=2)
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test-not-real", max_retries=2)


def _model() -> str:
    return f"classifier-{secrets.token_hex(4)}"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_llm_classifier_names_primitives_and_is_cached(fake, provider):
    model = fake.script(_model(), [{"text": 'Sure: {"metric": "revenue", "direction": "decrease"}'}])
    classifier = make_llm_classifier(provider, model, client=_client(provider, fake))
    first = compile_intent("tell me when takings get worse", "shop", {"type": "notification"}, classifier=classifier)
    second = compile_intent("Tell me when takings get worse!", "shop", {"type": "notification"}, classifier=classifier)
    assert first.condition["strategy"] == {
        "type": "change",
        "params": {"direction": "decrease", "value": 0.05, "window": "1d"},
    }
    assert first.condition == second.condition
    requests = fake.requests[model]
    assert len(requests) == 1  # the second intent normalizes to the first: answered from the cache
    body = requests[0]["body"]
    assert body["model"] == model and body["max_tokens"] == 60
    assert body.get("temperature") == (0 if provider == "openai" else None)
    assert "revenue" in body["messages"][0]["content"]  # the prompt lists the guardrails' metric vocabulary
    assert "takings get worse" in body["messages"][0]["content"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_default_client_honours_the_base_url_variables(fake, provider, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    model = fake.script(_model(), [{"text": '{"metric": "price", "direction": "increase"}'}])
    classifier = make_llm_classifier(provider, model)
    assert classifier("price goes up", "v1") == {"metric": "price", "direction": "increase"}
    assert [r["wire"] for r in fake.requests[model]] == [provider]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_transient_errors_are_retried_by_the_sdk(fake, provider):
    model = fake.script(_model(), [{"text": '{"metric": "price"}', "fail": [(503, 1)]}])
    classifier = make_llm_classifier(provider, model, client=_client(provider, fake))
    assert classifier("price", "v1") == {"metric": "price"}
    assert len(fake.requests[model]) == 2


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_unparseable_answers_are_ignored(fake, provider):
    model = fake.script(_model(), [{"text": "no idea"}])
    classifier = make_llm_classifier(provider, model, client=_client(provider, fake))
    assert classifier("x", "v") is None
    assert len(fake.requests[model]) == 1


def test_cached_classifier_keys_on_version():
    calls = []
    wrapped = cached_classifier(lambda n, v: calls.append((n, v)) or {"metric": "price"})
    wrapped("a", "1")
    wrapped("a", "1")
    wrapped("a", "2")
    assert calls == [("a", "1"), ("a", "2")]
