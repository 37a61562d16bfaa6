"""The benchmarks' model stand-in (``python -m bench.fake_llm``), its own process on one event loop,
answers the official SDKs as the test suite's fake does: the scripted tool call, then the text,
each after its delay, over kept-alive connections; an unknown model is the vendor's 404."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx2
import openai
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
DELAY_S = 0.3


@pytest.fixture(scope="module")
def model() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.fake_llm", "--delay", str(DELAY_S)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url, proc.pid
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM ends it cleanly


def _conversation(answer: dict) -> list[dict]:
    return [{"role": "user", "content": "List my documents"}, answer]


def test_openai_sdk_gets_the_tool_call_then_the_text_each_after_the_delay(model: tuple[str, int]):
    model_url = model[0]
    client = openai.OpenAI(base_url=model_url + "/v1", api_key="sk-not-real", max_retries=0)
    started = time.monotonic()
    first = client.chat.completions.create(model="bench-slow",
                                           messages=[{"role": "user", "content": "List my documents"}])
    assert time.monotonic() - started >= DELAY_S
    call = first.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments, first.choices[0].finish_reason) == (
        "list_documents", "{}", "tool_calls")
    second = client.chat.completions.create(model="bench-slow", messages=_conversation(
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "list_documents", "arguments": "{}"}}]}))
    assert (second.choices[0].message.content, second.choices[0].finish_reason) == ("done", "stop")
    assert second.usage.prompt_tokens == 100 and second.usage.completion_tokens == 20

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_anthropic_sdk_gets_the_same_script_in_its_wire_format(model: tuple[str, int]):
    model_url = model[0]
    client = anthropic.Anthropic(base_url=model_url, api_key="sk-ant-not-real", max_retries=0)
    first = client.messages.create(model="bench-slow", max_tokens=100,
                                   messages=[{"role": "user", "content": "List my documents"}])
    assert first.stop_reason == "tool_use" and first.content[0].name == "list_documents"
    second = client.messages.create(model="bench-slow", max_tokens=100, messages=_conversation(
        {"role": "assistant", "content": [{"type": "tool_use", "id": first.content[0].id, "name": "list_documents",
                                           "input": {}}]}))
    assert second.stop_reason == "end_turn" and second.content[0].text == "done"


def test_many_calls_at_once_wait_together_on_kept_alive_connections(model: tuple[str, int]):
    """200 calls at once take about one delay, not 200 (a timer each, not a thread); the second
    round's calls go over the first round's connections, which the server kept open."""
    model_url, pid = model
    http = httpx2.Client(limits=httpx2.Limits(max_connections=200, max_keepalive_connections=200))
    client = openai.OpenAI(base_url=model_url + "/v1", api_key="sk-not-real", max_retries=0, http_client=http)
    server = psutil.Process(pid)

    def one(_: int) -> str:
        answer = client.chat.completions.create(model="bench-slow", messages=[{"role": "user", "content": "x"}])
        return answer.choices[0].message.tool_calls[0].function.name

    def connections() -> set[tuple[str, int]]:
        return {c.raddr for c in server.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED and c.raddr}

    with ThreadPoolExecutor(200) as pool:
        rounds = []
        for _ in range(2):
            started = time.monotonic()
            assert set(pool.map(one, range(200))) == {"list_documents"}
            rounds.append(time.monotonic() - started)
            if len(rounds) == 1:
                first = connections()
    assert all(DELAY_S <= r < DELAY_S + 5 for r in rounds), rounds
    after = connections()  # the server closed none of the first round's; at most one per call at once
    assert first and first <= after and len(after) <= 200
    http.close()
