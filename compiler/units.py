"""Durations and number formatting shared by the compiler stages.

Windows are written as ``<int><unit>`` with unit ``s``, ``m``, ``h``, ``d`` or ``w`` ("15m", "1d").
``format_window`` gives the canonical spelling: the largest of d, h, m that divides the duration
exactly, so 24 hours is "1d" and a week is "7d".
"""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WINDOW_RE = re.compile(r"^([0-9]{1,6})([smhdw])$")


def parse_window(text: object) -> int:
    """Seconds in a window string such as "4h"; ValueError when it is not one."""
    match = _WINDOW_RE.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"not a window: {text!r} (expected e.g. '15m', '4h', '1d')")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def format_window(seconds: int) -> str:
    """Canonical window string for a positive number of seconds."""
    for unit in ("d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def window_words(window: str) -> str:
    """Human words for a window: "1d" → "1 day", "15m" → "15 minutes"."""
    seconds = parse_window(window)
    for unit, name in (("d", "day"), ("h", "hour"), ("m", "minute")):
        size = UNIT_SECONDS[unit]
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {name}" + ("" if count == 1 else "s")
    return f"{seconds} seconds"


def clean_float(value: float) -> float:
    """Round away binary noise (0.1 * 3 → 0.3) so equal decisions serialise to equal bytes."""
    return float(round(value, 10)) if math.isfinite(value) else value


def clean_number(value: float) -> float | int:
    """Like ``clean_float`` but whole numbers become int (threshold 150, not 150.0)."""
    if not math.isfinite(value):
        return value
    rounded = round(value, 10)
    if rounded == int(rounded) and abs(rounded) < 1e15:
        return int(rounded)
    return float(rounded)


def fraction_words(value: float) -> str:
    """A fraction as a percentage: 0.1 → "10%"."""
    return f"{clean_float(value * 100):g}%"


def number_words(value: float) -> str:
    """A number as written by a person: 150.0 → "150", 0.25 → "0.25"."""
    return f"{clean_number(value):g}"
