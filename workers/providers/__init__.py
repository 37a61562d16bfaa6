"""Model providers behind one interface (``Provider.complete``): ``openai``, ``anthropic``
(official SDKs) and ``local`` (a deterministic rule-based planner, not an LLM)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from shared.config import Settings
from workers.providers.base import Completion, Provider, ProviderError


def make_provider(name: str, settings: Settings) -> Provider:
    """A provider for ``name``: for the vendors, the process's :class:`ClientSet` for (provider,
    key, base URL), shared by every run of the process; ``local`` is built fresh (plain Python)."""
    if name in ("openai", "anthropic"):
        key = settings.openai_api_key if name == "openai" else settings.anthropic_api_key
        base = os.environ.get("OPENAI_BASE_URL" if name == "openai" else "ANTHROPIC_BASE_URL")
        slot = (name, key, base)
        found = _sets.get(slot)
        if found is None:
            with _building:  # hundreds of runs start at once: one set per slot, not one per run
                found = _sets.get(slot)
                if found is None:
                    first = _shared(name, key)  # raises provider_not_configured before anything is kept
                    found = _sets[slot] = ClientSet(name, lambda: _shared(name, key), first=first)
        return found
    return _build(name, settings)


class ClientSet:
    """One vendor's SDK clients in a process, the calls of every run in flight spread over them.

    Each SDK client has its own connection pool, and the pool's bookkeeping walks all of its
    connections and waiting requests on every request it sends and every answer it gets
    (httpcore2's ``_assign_requests_to_connections``: linear in the pool's size, twice a call).
    With hundreds of calls in flight on a few pools that walk was the largest part of the SDK's
    own CPU in a profile (measured: 500 runs of two calls each on 8 clients, 1.9–2.7 ms of CPU a
    call; on 64, 1.7–2.0). So a call goes to the client with the fewest calls in flight, the first such
    one (lowest index), and a new client is built (about 0.3 ms: the TLS context is shared) when
    every client already has ``PER_CLIENT`` calls in flight, up to ``MAX_CLIENTS``:

    * under light load every call goes to the first client and reuses its warm keep-alive
      connections (no new TCP or TLS handshake per run, as a round-robin over many clients
      would cost when runs are seconds apart);
    * under a burst each pool stays at about ``PER_CLIENT`` connections however many runs are
      in flight.

    Clients once built stay (their idle connections expire by the SDK's keep-alive timeout)."""

    PER_CLIENT = 16
    MAX_CLIENTS = 128

    def __init__(self, name: str, build: Callable[[], Provider], *, first: Provider | None = None) -> None:
        self.name = name
        self._build = build
        self._clients: list[Provider] = [first] if first is not None else []
        self._busy: list[int] = [0] * len(self._clients)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def in_flight(self) -> list[int]:
        """Calls in flight per client, in client order."""
        with self._lock:
            return list(self._busy)

    def _take(self) -> int:
        with self._lock:
            busy = self._busy
            i = busy.index(min(busy)) if busy else -1
            if i < 0 or (busy[i] >= self.PER_CLIENT and len(busy) < self.MAX_CLIENTS):
                self._clients.append(self._build())
                busy.append(0)
                i = len(busy) - 1
            busy[i] += 1
            return i

    def complete(self, *, model: str, system: str, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]]) -> Completion:
        i = self._take()
        try:
            return self._clients[i].complete(model=model, system=system, messages=messages, tools=tools)
        finally:
            with self._lock:
                self._busy[i] -= 1


_sets: dict[tuple[str, str | None, str | None], ClientSet] = {}
_building = threading.Lock()


def warm(settings: Settings) -> list[str]:
    """Import the vendor SDKs and build the first client of every configured vendor, before the
    process takes its first run: importing ``openai`` costs about a second of CPU (its pydantic
    types), and done lazily it lands on the first burst of runs, every run in the process waiting
    behind the import. Returns the vendors whose clients are ready; a vendor without a key is left
    alone (the API refuses runs for it)."""
    ready = []
    for name, key in (("openai", settings.openai_api_key), ("anthropic", settings.anthropic_api_key)):
        if not key:
            continue
        try:
            make_provider(name, settings)
        except ProviderError:
            continue
        ready.append(name)
    return ready


def _shared(name: str, api_key: str | None) -> Provider:
    if name == "openai":
        from workers.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(api_key)
    from workers.providers.anthropic_provider import AnthropicProvider

    return AnthropicProvider(api_key)


def _build(name: str, settings: Settings) -> Provider:
    if name == "openai":
        from workers.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(settings.openai_api_key)
    if name == "anthropic":
        from workers.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider(settings.anthropic_api_key)
    if name == "local":
        from workers.providers.local import LocalPlanner

        return LocalPlanner()
    raise ProviderError("unknown_provider", f"Unknown provider {name!r}", transient=False)


__all__ = ["ClientSet", "Provider", "ProviderError", "make_provider", "warm"]
