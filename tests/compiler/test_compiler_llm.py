"""The optional LLM classifier hook, driven through fake SDK clients (no network)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compiler import compile_intent
from compiler.llm import cached_classifier, make_llm_classifier


class FakeOpenAI:
    def __init__(self, reply: str) -> None:
        self.calls: list[dict] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))
        self.reply = reply

    def _create(self, **kwargs):
        self.calls.append(kwargs)
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=self.reply))])


class FakeAnthropic:
    def __init__(self, reply: str) -> None:
        self.calls: list[dict] = []
        self.messages = SimpleNamespace(create=self._create)
        self.reply = reply

    def _create(self, **kwargs):
        self.calls.append(kwargs)
        return SimpleNamespace(content=[SimpleNamespace(type="text", text=self.reply)])


@pytest.mark.parametrize("fake_cls,provider", [(FakeOpenAI, "openai"), (FakeAnthropic, "anthropic")])
def test_llm_classifier_names_primitives_and_is_cached(fake_cls, provider):
    fake = fake_cls('Sure: {"metric": "revenue", "direction": "decrease"}')
    classifier = make_llm_classifier(provider, "test-model", client=fake)
    first = compile_intent("tell me when takings get worse", "shop", {"type": "notification"}, classifier=classifier)
    second = compile_intent("Tell me when takings get worse!", "shop", {"type": "notification"}, classifier=classifier)
    assert first.condition["strategy"] == {
        "type": "change",
        "params": {"direction": "decrease", "value": 0.05, "window": "1d"},
    }
    assert first.condition == second.condition
    assert len(fake.calls) == 1 and fake.calls[0]["temperature"] == 0
    assert "revenue" in fake.calls[0]["messages"][0]["content"]


def test_unparseable_answers_are_ignored():
    classifier = make_llm_classifier("openai", "m", client=FakeOpenAI("no idea"))
    assert classifier("x", "v") is None


def test_cached_classifier_keys_on_version():
    calls = []
    wrapped = cached_classifier(lambda n, v: calls.append((n, v)) or {"metric": "price"})
    wrapped("a", "1")
    wrapped("a", "1")
    wrapped("a", "2")
    assert calls == [("a", "1"), ("a", "2")]
