"""Model providers behind one interface (``Provider.complete``): ``openai``, ``anthropic``
(official SDKs) and ``local`` (a deterministic rule-based planner, not an LLM)."""

from __future__ import annotations

import functools
import os

from shared.config import Settings
from workers.providers.base import Provider, ProviderError


def make_provider(name: str, settings: Settings) -> Provider:
    """The process's provider for ``name``: one SDK client per (provider, key, base URL), shared
    by every run in flight. A client costs ~25 ms of CPU to build (its HTTP client and TLS
    context), more than the run's own work, and holds the connection pool the runs share."""
    if name in ("openai", "anthropic"):
        key = settings.openai_api_key if name == "openai" else settings.anthropic_api_key
        base = os.environ.get("OPENAI_BASE_URL" if name == "openai" else "ANTHROPIC_BASE_URL")
        return _shared(name, key, base)
    return _build(name, settings)


@functools.lru_cache(maxsize=16)
def _shared(name: str, api_key: str | None, _base_url: str | None) -> Provider:
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


__all__ = ["Provider", "ProviderError", "make_provider"]
