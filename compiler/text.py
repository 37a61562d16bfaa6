"""Intent text normalisation, shared by the lexicon and the guardrails phrase tables.

Both the intent and every vocabulary phrase pass through ``normalize`` so they meet in the same
form: NFKC, case-folded, "per cent"/"percent"/"pct" → "%", thousands separators and currency
signs dropped, hyphens/underscores/slashes inside words → spaces, ">"/"≥" → "above",
"<"/"≤" → "below", other punctuation → spaces, whitespace collapsed. Decimal points and a sign
directly before a digit survive.
"""

from __future__ import annotations

import re
import unicodedata

_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_JOINER_RE = re.compile(r"(?<=\w)[-_/'’](?=\w)")
_PERCENT_WORD_RE = re.compile(r"\b(?:per\s*cent|percent|pct)\b")
_PERCENT_GLUE_RE = re.compile(r"(?<=\d)\s+%")
_GE_RE = re.compile(r">=?|≥")
_LE_RE = re.compile(r"<=?|≤")
_STRAY_DOT_RE = re.compile(r"\.(?!\d)")
_PUNCT_RE = re.compile(r"[^\w\s.%+\-]|_")
_STRAY_SIGN_RE = re.compile(r"[-+](?![0-9.])|(?<=\w)[-+]")
_SPACE_RE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Canonical lower-case, single-spaced form of an intent or a vocabulary phrase."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _THOUSANDS_RE.sub("", text)
    text = _JOINER_RE.sub(" ", text)
    text = _PERCENT_WORD_RE.sub("%", text)
    text = _PERCENT_GLUE_RE.sub("%", text)
    text = _GE_RE.sub(" above ", text)
    text = _LE_RE.sub(" below ", text)
    text = _STRAY_DOT_RE.sub(" ", text)
    text = _PUNCT_RE.sub(" ", text)
    text = _STRAY_SIGN_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


def tokens(text: str) -> tuple[str, ...]:
    """Tokens of already-normalised text."""
    return tuple(text.split(" ")) if text else ()
