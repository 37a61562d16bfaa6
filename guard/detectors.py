"""Detectors for secrets and HIPAA Safe Harbor PHI, and `redact()`.

A `Detector` is one regex (from `guard.patterns`) behind a gate (cheap substring / digit
checks). A `DetectorSet` answers two questions:

- `present(text)`: does anything match? Gates first, then one pass of a cached alternation of the
  detectors whose gates passed. This is the verify fast path.
- `find(text)`: every match of every gated-in detector, as typed `Finding`s (the slow path, run
  only when something is present, and by `redact`).

Detectors read text folded (`guard.normalize.fold`: no zero-width or look-alike characters to
hide behind). `find_phi`, `find_secrets` and `redact` report positions in the text they were given.

PHI detection ignores text inside redaction placeholders (`[REDACTED:SSN]`), so `redact()` output
never trips the detector again. Findings never carry the matched value, only its type and
position, so they can go into events and logs without leaking what they found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from guard.normalize import FOLD_TABLE, base64_texts, fold, undo_escapes
from guard.patterns import PHI_PATTERNS, SECRET_PATTERNS

PHI_IDENTIFIERS: tuple[str, ...] = tuple(PHI_PATTERNS)
SECRET_DETECTORS: tuple[str, ...] = tuple(SECRET_PATTERNS)
PLACEHOLDER_RE = re.compile(r"\[REDACTED:[A-Z_]+\]")
_DIGIT_RE = re.compile(r"\d")


def _folded_with_origin(text: str) -> tuple[str, list[int] | None]:
    """`fold(text)` and, when it moved characters, the index in `text` of each folded character."""
    folded = fold(text)
    if folded == text:
        return text, None
    origin: list[int] = []
    for i, ch in enumerate(text):
        piece = FOLD_TABLE[ord(ch)]
        if piece is not None:
            origin.extend([i] * (1 if isinstance(piece, int) else len(piece)))
    return folded, origin


def _to_origin(found: list[Finding], origin: list[int] | None) -> list[Finding]:
    if origin is None:
        return found
    return [Finding(f.type, origin[f.start], origin[f.end - 1] + 1) for f in found]


def _has_digit(text: str) -> Callable[[], bool]:
    """A lazy, memoised "does `text` contain a digit" (only computed if a gate asks)."""
    memo: list[bool] = []

    def check() -> bool:
        if not memo:
            memo.append(_DIGIT_RE.search(text) is not None)
        return memo[0]

    return check


@dataclass(frozen=True)
class Finding:
    """One detected identifier or secret: its type and its span in the scanned text."""

    type: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "start": self.start, "end": self.end}


_LITERAL_START = re.compile(r"(?:[^\\\[\](){}.^$*+?|]|\\[^\w])")  # first pattern char is a plain literal


class Detector:
    """One typed regex behind a gate (see `guard.patterns` for the gate keys).

    `anchor` says how `DetectorSet.present` runs it: `literal` patterns start with a literal, so
    `search` is a fast prefix scan and needs no gate; `digit` patterns start with `\\d` at the
    start of a digit run and are tried only there; `keyword` patterns run only when their gate
    passes.
    """

    __slots__ = ("kind", "regex", "lowered_regex", "digit", "lower", "exact", "has_value", "anchor")

    def __init__(self, kind: str, pattern: str, gate: dict[str, Any]) -> None:
        self.kind = kind
        self.regex = re.compile(pattern)
        self.digit = bool(gate.get("digit"))
        self.lower = tuple(gate.get("lower", ()))
        self.exact = tuple(gate.get("exact", ()))
        self.has_value = "v" in self.regex.groupindex
        lowered_pattern = gate.get("lowered_pattern")
        self.lowered_regex = re.compile(lowered_pattern) if lowered_pattern else None
        if pattern.startswith("\\d"):
            self.anchor = "digit"
        elif _LITERAL_START.match(pattern):
            self.anchor = "literal"
        else:
            self.anchor = "keyword"

    def gate(self, text: str, lowered: str, has_digit: Callable[[], bool]) -> bool:
        """Cheap pre-check; `has_digit` is called last and only when needed."""
        if self.exact:
            for k in self.exact:
                if k in text:
                    break
            else:
                return False
        if self.lower:
            for k in self.lower:
                if k in lowered:
                    break
            else:
                return False
        return not self.digit or has_digit()

    def finditer(self, text: str) -> Iterable[Finding]:
        for m in self.regex.finditer(text):
            if self.has_value and m.group("v") is not None:
                yield Finding(self.kind, *m.span("v"))
            else:
                yield Finding(self.kind, *m.span())


class DetectorSet:
    """A fixed list of detectors with a fast `present` check and an exact `find`."""

    def __init__(self, detectors: Sequence[Detector], *, skip_placeholders: bool = False) -> None:
        self.detectors = tuple(detectors)
        self.skip_placeholders = skip_placeholders
        self._literal = tuple(d for d in self.detectors if d.anchor == "literal")
        self._keyword = tuple(d for d in self.detectors if d.anchor == "keyword")
        rests = [d.regex.pattern[2:].replace("(?P<v>", "(?:") for d in self.detectors if d.anchor == "digit"]
        # The digit-anchored patterns share their leading `\\d`; factored out, the alternation
        # starts with a class, so `search` jumps from digit to digit instead of trying every
        # alternative at every position.
        self._digit_union = re.compile("\\d(?:" + "|".join(f"(?:{r})" for r in rests) + ")") if rests else None

    def present(self, text: str) -> bool:
        """True when some detector matches `text` (outside placeholders, for PHI sets)."""
        if not text or not self.detectors:
            return False
        scan = text
        if self.skip_placeholders and "[REDACTED:" in text:
            scan = PLACEHOLDER_RE.sub("\x00", text)
        hit = self._present(scan)
        # A hit in PHI text is confirmed by the exact path, which drops matches inside placeholders.
        return hit and (not self.skip_placeholders or bool(self.find(text)))

    def _present(self, text: str) -> bool:
        for d in self._literal:
            if d.regex.search(text) is not None:
                return True
        if self._digit_union is not None and self._digit_union.search(text) is not None:
            return True
        if self._keyword:
            lowered = text.lower()
            has_digit = _has_digit(text)
            for d in self._keyword:
                if d.gate(text, lowered, has_digit):
                    if d.lowered_regex is not None:
                        if d.lowered_regex.search(lowered) is not None:
                            return True
                    elif d.regex.search(text) is not None:
                        return True
        return False

    def find(self, text: str) -> list[Finding]:
        """Every match of every detector whose gate passes, ordered by position."""
        if not text or not self.detectors:
            return []
        lowered = text.lower()
        has_digit = _has_digit(text)
        found: list[Finding] = []
        for d in self.detectors:
            if d.anchor == "literal" or d.gate(text, lowered, has_digit):
                found.extend(d.finditer(text))
        if self.skip_placeholders and "[REDACTED:" in text:
            spans = [m.span() for m in PLACEHOLDER_RE.finditer(text)]
            found = [f for f in found if not any(s <= f.start and f.end <= e for s, e in spans)]
        found.sort(key=lambda f: (f.start, -f.end, f.type))
        return found


@lru_cache(maxsize=64)
def secret_detectors(names: tuple[str, ...] | None = None) -> DetectorSet:
    """The secret detectors named (all when None). Unknown names raise KeyError."""
    selected = SECRET_DETECTORS if names is None else names
    return DetectorSet([Detector(name, pattern, gate) for name in selected for pattern, gate in SECRET_PATTERNS[name]])


@lru_cache(maxsize=64)
def phi_detectors(identifiers: tuple[str, ...] | None = None) -> DetectorSet:
    """The PHI detectors for the identifiers named (all when None), typed by placeholder type."""
    selected = PHI_IDENTIFIERS if identifiers is None else identifiers
    detectors: list[Detector] = []
    for name in selected:
        kind, entries = PHI_PATTERNS[name]
        detectors.extend(Detector(kind, pattern, gate) for pattern, gate in entries)
    return DetectorSet(detectors, skip_placeholders=True)


_NAME_TOKEN_RE = re.compile(r"[A-Z][a-z'-]{2,}")


@lru_cache(maxsize=256)
def name_detectors(names: tuple[str, ...]) -> DetectorSet:
    """Detectors for names known from the record.

    A full name matches case-insensitively with any whitespace between its parts; its
    capitalised parts of three or more letters ("Doe" in "Jane Doe") match case-sensitively as
    whole words, so "Ms. Doe" is caught without "will" matching a patient called "Will".
    """
    full: dict[str, list[str]] = {}
    tokens: set[str] = set()
    for raw in names:
        parts = fold(str(raw)).split()
        name = " ".join(parts)
        if len(name) < 2 or not any(ch.isalnum() for ch in name):
            continue
        full[name.lower()] = parts
        tokens.update(t for t in parts if _NAME_TOKEN_RE.fullmatch(t))
    detectors = []
    for parts in full.values():
        pattern = r"(?<!\w)(?i:" + r"\s+".join(re.escape(p) for p in parts) + r")(?!\w)"
        detectors.append(Detector("NAME", pattern, {"lower": (parts[0].lower(),)}))
    for token in sorted(tokens - {" ".join(p) for p in full.values()}):
        detectors.append(Detector("NAME", rf"(?<!\w){re.escape(token)}(?!\w)", {"exact": (token,)}))
    return DetectorSet(detectors, skip_placeholders=True)


def find_secrets(text: str, detectors: tuple[str, ...] | None = None) -> list[Finding]:
    """Secrets in `text`; finding types are detector names such as `aws_access_key`."""
    scan, origin = _folded_with_origin(text)
    return _to_origin(secret_detectors(detectors).find(scan), origin)


def find_phi(text: str, names: Iterable[str] = (), identifiers: tuple[str, ...] | None = None) -> list[Finding]:
    """PHI in `text`, ignoring redaction placeholders; types are `SSN`, `NAME`, `DATE`, ...

    `names` (from the record) are checked when `identifiers` is None or includes `name`.
    """
    scan, origin = _folded_with_origin(text)
    found = phi_detectors(identifiers).find(scan)
    names = tuple(names)
    if names and (identifiers is None or "name" in identifiers):
        found.extend(name_detectors(names).find(scan))
        found.sort(key=lambda f: (f.start, -f.end, f.type))
    return _to_origin(found, origin)


def extract_names(text: str) -> list[str]:
    """Person names a text states explicitly ("Patient: Jane Doe", "Name: ...", "Mr. Smith").

    For building `VerifyContext.record_names` from the documents an execution has read, so later
    mentions of the same person ("Jane Doe", "Doe") are recognised anywhere. Order of first
    appearance, no duplicates.
    """
    text = fold(text)
    found = [f for d in phi_detectors(("name",)).detectors for f in d.finditer(text)]
    names: list[str] = []
    for finding in sorted(found, key=lambda f: f.start):
        name = " ".join(text[finding.start : finding.end].split())
        if name not in names:
            names.append(name)
    return names


def _redact_once(text: str, names: tuple[str, ...]) -> tuple[str, list[Finding]]:
    merged: list[Finding] = []
    for f in find_phi(text, names):
        if merged and f.start < merged[-1].end:
            last = merged[-1]
            if f.end > last.end:
                merged[-1] = Finding(last.type, last.start, f.end)
            continue
        merged.append(f)
    out: list[str] = []
    pos = 0
    for f in merged:
        out.append(text[pos : f.start])
        out.append(f"[REDACTED:{f.type}]")
        pos = f.end
    out.append(text[pos:])
    return "".join(out), merged


def redact(text: str, names: Iterable[str] = ()) -> tuple[str, list[Finding]]:
    """Replace every PHI identifier in `text` with a typed placeholder such as `[REDACTED:SSN]`.

    Overlapping hits merge into one placeholder typed by the earliest, longest hit. Passes repeat
    until `find_phi(result, names)` is empty, so the output always passes the detector, and so do
    its decoded views, which the guard reads too (`ToolCall.scan_text`): where undoing the
    percent-encoding or HTML references shows PHI (``%2023-45-6789`` reads `` 23-45-6789``), the
    text goes on decoded, and a base64 token that says PHI is replaced by a placeholder. Finding
    positions refer to the input text (for a later pass, to the previous pass's output).
    """
    names = tuple(names)
    text, findings = _redact_plain(text, names)
    for _ in range(16):
        folded = fold(text)
        if "%" in folded or "&" in folded:
            plain = undo_escapes(folded)
            if plain != folded and find_phi(plain, names):
                text, more = _redact_plain(plain, names)
                findings.extend(more)
                continue
        hidden = [(token, found[0].type) for token, said in base64_texts(folded) if (found := find_phi(said, names))]
        if not hidden:
            return text, findings
        for token, type_ in hidden:
            folded = folded.replace(token, f"[REDACTED:{type_}]")
        text, more = _redact_plain(folded, names)
        findings.extend(more)
    # Not expected to happen; fail closed rather than return text that may still hold PHI.
    raise ValueError("redaction did not converge")


def _redact_plain(text: str, names: tuple[str, ...]) -> tuple[str, list[Finding]]:
    text, findings = _redact_once(text, names)
    for _ in range(16):
        if not find_phi(text, names):
            return text, findings
        text, more = _redact_once(text, names)
        findings.extend(more)
    # Not expected to happen; fail closed rather than return text that may still hold PHI.
    raise ValueError("redaction did not converge")
