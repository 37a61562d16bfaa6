"""Token prices per model, in cents per million tokens (input, output).

A model missing from the table is charged ``Settings.default_price_per_mtok_cents`` for input
and output alike (never zero), so an unknown or self-hosted model still consumes budget. The
``local`` planner is priced that way too: its token counts are estimates from text length.
"""

from __future__ import annotations

from decimal import Decimal

# Public list prices (USD cents per 1M tokens), checked when added; override by adding a row.
PRICES: dict[str, tuple[int, int]] = {
    "gpt-4o": (250, 1000),
    "gpt-4o-mini": (15, 60),
    "gpt-4.1": (200, 800),
    "gpt-4.1-mini": (40, 160),
    "gpt-4.1-nano": (10, 40),
    "o3-mini": (110, 440),
    "claude-sonnet-4-5": (300, 1500),
    "claude-3-5-sonnet-latest": (300, 1500),
    "claude-3-5-haiku-latest": (80, 400),
    "claude-haiku-4-5": (100, 500),
    "claude-opus-4-1": (1500, 7500),
}

MILLION = Decimal(1_000_000)


def price(model: str, default_cents: int) -> tuple[Decimal, Decimal]:
    if default_cents <= 0:
        raise ValueError("the default price must be positive")
    p = PRICES.get(model)
    if p is None:
        return Decimal(default_cents), Decimal(default_cents)
    return Decimal(p[0]), Decimal(p[1])


def cost_cents(model: str, input_tokens: int, output_tokens: int, default_cents: int) -> Decimal:
    """Cost of one call, in cents (6 decimal places, the column's precision)."""
    pin, pout = price(model, default_cents)
    return ((pin * input_tokens + pout * output_tokens) / MILLION).quantize(Decimal("0.000001"))


def estimate_tokens(text_len: int) -> int:
    """A conservative token estimate from a character count (about 4 characters a token)."""
    return text_len // 3 + 1
