"""The built-in lexicon resolver: turns normalised intent text into located facts.

One left-to-right pass over the tokens, in a fixed order so each token is used once:
1. the entity scope, if the intent repeats it ("AAPL"), is masked out;
2. durations ("within 4 hours", "in 1h", "over the past week", "24h", "daily") become windows,
   taking their preposition with them so "over" there is not read as a comparator;
3. z-scores ("3 sigma", "z-score above 2.5");
4. numbers ("150", "5%", "1.5k", "2 million");
5. vocabulary phrases, longest match first (metric, direction and severity words).
Everything found keeps its token index so later stages can pair a comparator with its number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compiler.guardrails import Guardrails, Phrase
from compiler.text import normalize, tokens

_UNIT_WORDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "wk": 604800,
    "wks": 604800,
    "week": 604800,
    "weeks": 604800,
}
# Glued or abbreviated units that also mean something else ("2m" = 2 million): windows only after
# a preposition ("in 5m").
_AMBIGUOUS_UNITS = frozenset({"s", "m", "h", "d", "w", "sec", "secs", "min", "mins"})
_GLUED_RE = re.compile(r"([0-9]{1,6}(?:\.[0-9]+)?)(" + "|".join(sorted(_UNIT_WORDS, key=len, reverse=True)) + r")")
_PREPOSITIONS = frozenset({"within", "in", "over", "during", "for", "across", "inside", "per", "every"})
_FILLERS = frozenset({"the", "last", "past", "next", "a", "an", "of"})
_ONE = frozenset({"a", "an", "one"})
_ADVERB_WINDOWS = {"hourly": 3600, "daily": 86400, "weekly": 604800, "intraday": 86400}
_SIGMA_WORDS = {
    ("sigma",),
    ("σ",),
    ("sd",),
    ("sds",),
    ("stdev",),
    ("stdevs",),
    ("stddev",),
    ("stddevs",),
    ("standard", "deviation"),
    ("standard", "deviations"),
    ("std", "dev"),
    ("std", "devs"),
}
_SIGMA_GLUED_RE = re.compile(r"([0-9]{1,3}(?:\.[0-9]+)?)(?:sigma|σ|sd)")
_ZSCORE_LEADS = {("z", "score"), ("zscore",), ("z", "scores")}
_ZSCORE_JOINERS = frozenset({"of", "above", "over", "exceeds", "at", "least", "is", "than", "greater"})
_NUMBER_RE = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(%|k|mm|mn|m|bn|b)?")
_MULTIPLIERS = {
    "k": 1e3,
    "m": 1e6,
    "mm": 1e6,
    "mn": 1e6,
    "b": 1e9,
    "bn": 1e9,
    "thousand": 1e3,
    "million": 1e6,
    "billion": 1e9,
}


@dataclass(frozen=True, slots=True)
class Number:
    index: int
    value: float
    percent: bool
    text: str


@dataclass(frozen=True, slots=True)
class Located:
    """A fact found at tokens[start:end]."""

    start: int
    end: int
    text: str
    value: float = 0.0
    phrase: Phrase | None = None


@dataclass(slots=True)
class Scan:
    normalized: str
    tokens: tuple[str, ...]
    windows: list[Located] = field(default_factory=list)
    zscores: list[Located] = field(default_factory=list)
    numbers: list[Number] = field(default_factory=list)
    phrases: list[Located] = field(default_factory=list)
    entity_masked: bool = False


def _mask_entity(scan: Scan, used: list[bool], entity_scope: str) -> None:
    wanted = tokens(normalize(entity_scope))
    size = len(wanted)
    if not size:
        return
    toks = scan.tokens
    for start in range(len(toks) - size + 1):
        if toks[start : start + size] == wanted:
            for i in range(start, start + size):
                used[i] = True
            scan.entity_masked = True


def _preposition_before(toks: tuple[str, ...], index: int) -> int | None:
    """Index of a window preposition before ``index``, skipping at most two filler words."""
    i = index - 1
    skipped = 0
    while i >= 0 and toks[i] in _FILLERS and skipped < 2:
        i -= 1
        skipped += 1
    return i if i >= 0 and toks[i] in _PREPOSITIONS else None


def _durations(scan: Scan, used: list[bool]) -> None:
    toks = scan.tokens
    for i, tok in enumerate(toks):
        if used[i]:
            continue
        seconds: float | None = None
        end = i + 1
        glued = _GLUED_RE.fullmatch(tok)
        prep = _preposition_before(toks, i)
        if glued and (glued.group(2) not in _AMBIGUOUS_UNITS or glued.group(2) in ("h", "d", "w") or prep is not None):
            seconds = float(glued.group(1)) * _UNIT_WORDS[glued.group(2)]
        elif tok in _ADVERB_WINDOWS:
            seconds = _ADVERB_WINDOWS[tok]
        elif i + 1 < len(toks) and toks[i + 1] in _UNIT_WORDS and not used[i + 1]:
            unit = toks[i + 1]
            amount = _NUMBER_RE.fullmatch(tok)
            ambiguous = unit in _AMBIGUOUS_UNITS and unit not in ("sec", "secs", "min", "mins")
            if (
                amount
                and not amount.group(1)
                and not amount.group(3)
                and (prep is not None or not ambiguous)
                and len(amount.group(2)) <= 9
            ):
                seconds = float(amount.group(2)) * _UNIT_WORDS[unit]
                end = i + 2
            elif (tok in _ONE and prep is not None) or tok in ("last", "past"):
                seconds = float(_UNIT_WORDS[unit])
                end = i + 2
        if seconds is None or seconds != int(seconds) or seconds <= 0:
            continue
        start = prep if prep is not None else i
        for j in range(start, end):
            used[j] = True
        scan.windows.append(Located(start, end, " ".join(toks[start:end]), float(int(seconds))))


def _zscores(scan: Scan, used: list[bool]) -> None:
    toks = scan.tokens
    n = len(toks)
    for i, tok in enumerate(toks):
        if used[i]:
            continue
        glued = _SIGMA_GLUED_RE.fullmatch(tok)
        if glued:
            used[i] = True
            scan.zscores.append(Located(i, i + 1, tok, float(glued.group(1))))
            continue
        amount = _NUMBER_RE.fullmatch(tok)
        if amount and not amount.group(3):
            for width in (2, 1):
                if i + 1 + width <= n and tuple(toks[i + 1 : i + 1 + width]) in _SIGMA_WORDS:
                    for j in range(i, i + 1 + width):
                        used[j] = True
                    scan.zscores.append(
                        Located(i, i + 1 + width, " ".join(toks[i : i + 1 + width]), float(amount.group(0)))
                    )
                    break
            continue
        for lead in _ZSCORE_LEADS:
            if tuple(toks[i : i + len(lead)]) != lead:
                continue
            j = i + len(lead)
            while j < n and toks[j] in _ZSCORE_JOINERS and j - i < len(lead) + 3:
                j += 1
            value = _NUMBER_RE.fullmatch(toks[j]) if j < n and not used[j] else None
            if value and not value.group(3):
                for k in range(i, j + 1):
                    used[k] = True
                scan.zscores.append(Located(i, j + 1, " ".join(toks[i : j + 1]), float(value.group(0))))
            break


def _numbers(scan: Scan, used: list[bool]) -> None:
    toks = scan.tokens
    for i, tok in enumerate(toks):
        if used[i]:
            continue
        match = _NUMBER_RE.fullmatch(tok)
        if match is None:
            continue
        sign, digits, suffix = match.groups()
        value = float(digits) * (-1.0 if sign == "-" else 1.0)
        used[i] = True
        if suffix == "%":
            scan.numbers.append(Number(i, value / 100.0, True, tok))
            continue
        if suffix:
            value *= _MULTIPLIERS[suffix]
        elif i + 1 < len(toks) and toks[i + 1] in _MULTIPLIERS and not used[i + 1]:
            value *= _MULTIPLIERS[toks[i + 1]]
            used[i + 1] = True
        scan.numbers.append(Number(i, value, False, tok))


def _phrases(scan: Scan, used: list[bool], g: Guardrails) -> None:
    toks = scan.tokens
    n = len(toks)
    table = g.phrases
    i = 0
    while i < n:
        if used[i]:
            i += 1
            continue
        for width in range(min(g.max_phrase_len, n - i), 0, -1):
            key = toks[i : i + width]
            phrase = table.get(key)
            if phrase is not None and not any(used[i : i + width]):
                scan.phrases.append(Located(i, i + width, phrase.text, phrase=phrase))
                i += width
                break
        else:
            i += 1


def scan_intent(intent: str, entity_scope: str, g: Guardrails) -> Scan:
    """Every located fact in ``intent`` under the vocabulary of ``g``."""
    normalized = normalize(intent)
    scan = Scan(normalized, tokens(normalized))
    used = [False] * len(scan.tokens)
    _mask_entity(scan, used, entity_scope)
    _durations(scan, used)
    _zscores(scan, used)
    _numbers(scan, used)
    _phrases(scan, used, g)
    return scan
