"""Model providers behind one interface (``Provider.complete``): ``openai``, ``anthropic``
(official SDKs) and ``local`` (a deterministic rule-based planner, not an LLM)."""

from __future__ import annotations

from shared.config import Settings
from workers.providers.base import Provider, ProviderError


def make_provider(name: str, settings: Settings) -> Provider:
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
