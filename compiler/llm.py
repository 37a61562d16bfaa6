"""Optional LLM classifier hook for ``compile_intent(..., classifier=...)``.

Off by default; the built-in lexicon needs no network. When enabled, the model is asked only
which *metric* and *direction* an intent names, chosen from the guardrails vocabulary; its answer
is consulted only for primitives the lexicon missed and is re-checked against the vocabulary, so
it can never set a parameter value. Answers are cached by (normalised intent, guardrails version),
which keeps compilation deterministic for as long as the cache holds the entry.

The SDKs are imported lazily, only when no client is passed in.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from compiler.guardrails import Guardrails, load_guardrails
from compiler.model import DIRECTIONS
from compiler.resolve import Classifier

_JSON_RE = re.compile(r"\{.*?\}", re.DOTALL)


def cached_classifier(classifier: Classifier, maxsize: int = 4096) -> Classifier:
    """Wrap ``classifier`` in an LRU cache keyed by (normalised intent, guardrails version)."""
    cache: OrderedDict[tuple[str, str], Mapping[str, Any] | None] = OrderedDict()

    def lookup(normalized: str, version: str) -> Mapping[str, Any] | None:
        key = (normalized, version)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        answer = classifier(normalized, version)
        cache[key] = answer
        if len(cache) > maxsize:
            cache.popitem(last=False)
        return answer

    return lookup


def _prompt(normalized: str, g: Guardrails) -> str:
    return (
        "Classify a monitoring request. Answer with one JSON object and nothing else: "
        '{"metric": <one of ' + json.dumps(list(g.metrics)) + " or null>, "
        '"direction": <one of ' + json.dumps([d for d in DIRECTIONS if d not in ("above", "below")]) + " or null>}.\n"
        f"Request: {normalized}"
    )


def _parse(text: str) -> dict[str, Any] | None:
    match = _JSON_RE.search(text or "")
    if not match:
        return None
    try:
        answer = json.loads(match.group(0))
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def make_llm_classifier(
    provider: str,
    model: str,
    *,
    client: Any = None,
    guardrails: dict[str, Any] | Guardrails | None = None,
    cache_size: int = 4096,
) -> Classifier:
    """A cached classifier backed by ``openai`` (temperature 0) or ``anthropic`` (official SDKs)."""
    g = load_guardrails(guardrails)
    if provider not in ("openai", "anthropic"):
        raise ValueError("provider must be 'openai' or 'anthropic'")
    if client is None:
        if provider == "openai":
            import openai

            client = openai.OpenAI()
        else:
            import anthropic

            client = anthropic.Anthropic()

    def ask_openai(prompt: str) -> str:
        response = client.chat.completions.create(
            model=model, temperature=0, max_tokens=60, messages=[{"role": "user", "content": prompt}]
        )
        return response.choices[0].message.content or ""

    def ask_anthropic(prompt: str) -> str:
        # No temperature: current SDKs no longer take it (the answer is cached per intent and
        # guardrails version, which is what keeps compilation deterministic).
        response = client.messages.create(model=model, max_tokens=60, messages=[{"role": "user", "content": prompt}])
        return "".join(getattr(block, "text", "") for block in response.content)

    ask: Callable[[str], str] = ask_openai if provider == "openai" else ask_anthropic

    def classify(normalized: str, version: str) -> Mapping[str, Any] | None:
        return _parse(ask(_prompt(normalized, g)))

    return cached_classifier(classify, cache_size)
