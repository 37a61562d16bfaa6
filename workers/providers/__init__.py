"""Model providers behind one interface (``Provider.complete``): ``openai``, ``anthropic``
(official SDKs) and ``local`` (a deterministic rule-based planner, not an LLM)."""

from __future__ import annotations

import itertools
import os
import threading

from shared.config import Settings
from workers.providers.base import Provider, ProviderError

# Runs in flight share SDK clients, a few of them: a client costs ~25 ms of CPU to build (its HTTP
# client and TLS context), more than a run's own work, so one per run is out; and one client's
# connection pool scans all its connections for every request it sends (httpcore), which with
# hundreds of calls in flight on one pool cost more CPU than the rest of the run. A handful of
# pools, taken in turn, keep each small.
CLIENTS_PER_PROVIDER = 8
_turn = itertools.count()


def make_provider(name: str, settings: Settings) -> Provider:
    """A provider for ``name``: for the vendors, one of the process's shared SDK clients per
    (provider, key, base URL), taken in turn; ``local`` is built fresh (it is plain Python)."""
    if name in ("openai", "anthropic"):
        key = settings.openai_api_key if name == "openai" else settings.anthropic_api_key
        base = os.environ.get("OPENAI_BASE_URL" if name == "openai" else "ANTHROPIC_BASE_URL")
        slot = (name, key, base, next(_turn) % CLIENTS_PER_PROVIDER)
        client = _clients.get(slot)
        if client is None:
            with _building:  # hundreds of runs start at once: build each client once, not once per run
                client = _clients.get(slot)
                if client is None:
                    client = _clients[slot] = _shared(*slot)
        return client
    return _build(name, settings)


_clients: dict[tuple[str, str | None, str | None, int], Provider] = {}
_building = threading.Lock()


def warm(settings: Settings) -> list[str]:
    """Import the vendor SDKs and build the shared clients of every configured vendor, before the
    process takes its first run: importing ``openai`` costs about a second of CPU (its pydantic
    types), and done lazily it lands on the first burst of runs, every run in the process waiting
    behind the import. Returns the vendors whose clients are ready; a vendor without a key is left
    alone (the API refuses runs for it)."""
    ready = []
    for name, key in (("openai", settings.openai_api_key), ("anthropic", settings.anthropic_api_key)):
        if not key:
            continue
        try:
            for _ in range(CLIENTS_PER_PROVIDER):
                make_provider(name, settings)
        except ProviderError:
            continue
        ready.append(name)
    return ready


def _shared(name: str, api_key: str | None, _base_url: str | None, _shard: int) -> Provider:
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


__all__ = ["Provider", "ProviderError", "make_provider", "warm"]
