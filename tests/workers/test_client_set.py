"""A vendor's SDK clients in one process (``workers.providers.ClientSet``): calls go to the
least busy client, the first one under light load (its keep-alive connections stay warm), and a
burst spreads over new clients of at most PER_CLIENT calls each."""

from __future__ import annotations

import threading

import pytest

from shared.config import Settings
from workers.providers import ClientSet, make_provider
from workers.providers.base import Completion, ProviderError


class Vendor:
    """Stands in for one SDK client: records its calls; a call waits for ``release`` when set."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.name = "openai"
        self.calls = 0
        self.release = release

    def complete(self, *, model, system, messages, tools):
        self.calls += 1
        if self.release is not None:
            assert self.release.wait(10)
        return Completion(text=model)


def call(clients: ClientSet, model: str = "m") -> Completion:
    return clients.complete(model=model, system="s", messages=[], tools=[])


def test_calls_one_after_another_reuse_the_first_client():
    built: list[Vendor] = []
    clients = ClientSet("openai", lambda: built.append(Vendor()) or built[-1])
    for i in range(50):
        assert call(clients, f"m{i}").text == f"m{i}"
    assert len(built) == 1 and built[0].calls == 50
    assert clients.in_flight() == [0]


def test_a_burst_spreads_over_clients_of_at_most_per_client_calls(monkeypatch):
    monkeypatch.setattr(ClientSet, "PER_CLIENT", 4)
    monkeypatch.setattr(ClientSet, "MAX_CLIENTS", 6)
    release = threading.Event()
    built: list[Vendor] = []
    clients = ClientSet("openai", lambda: built.append(Vendor(release)) or built[-1])
    threads = [threading.Thread(target=call, args=(clients,)) for _ in range(30)]
    for t in threads:
        t.start()
    try:
        deadline = threading.Event()
        for _ in range(200):
            if sum(clients.in_flight()) == 30:
                break
            deadline.wait(0.01)
        busy = clients.in_flight()
        # 24 calls fill 6 clients of 4; the 6 beyond MAX_CLIENTS x PER_CLIENT share them evenly.
        assert len(built) == 6 and sum(busy) == 30 and max(busy) - min(busy) <= 1, busy
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert clients.in_flight() == [0] * 6
    assert sum(v.calls for v in built) == 30


def test_a_failed_call_frees_its_place():
    class Failing(Vendor):
        def complete(self, **kw):
            raise ProviderError("provider_unavailable", "down", transient=True)

    clients = ClientSet("openai", Failing)
    for _ in range(3):
        with pytest.raises(ProviderError):
            call(clients)
    assert clients.in_flight() == [0]


def test_one_set_per_vendor_key_and_endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    a = make_provider("openai", Settings(openai_api_key="sk-one"))
    assert make_provider("openai", Settings(openai_api_key="sk-one")) is a
    assert make_provider("openai", Settings(openai_api_key="sk-two")) is not a
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:10/v1")
    assert make_provider("openai", Settings(openai_api_key="sk-one")) is not a
    assert isinstance(a, ClientSet) and len(a) == 1 and a.name == "openai"
