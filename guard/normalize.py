"""How the detectors read text, so that dressing an identifier or a secret up does not hide it.

`fold(text)`: compatibility forms to their plain ones (NFKC: fullwidth digits and colons,
no-break spaces), format characters and combining marks dropped (zero-width spaces and joiners,
soft hyphens, bidi controls), every dash and minus sign a hyphen-minus and every decimal digit an
ASCII digit: `123\u201145\u20116789` and `AKIA\u200b…` read as what they are. ASCII text is
returned as it is.

`decoded_views(text)`: the text again with percent-encoding, HTML character references and base64
tokens undone, for the rules to scan beside the argument (`ToolCall.scan_text`).

Homoglyph letters from other scripts (a Cyrillic `а` in a name) are not folded.
"""

from __future__ import annotations

import base64
import html
import unicodedata
from collections.abc import Iterator
from urllib.parse import unquote

# Minus signs and hyphen look-alikes outside the dash category (Pd), after NFKC.
_MINUS_LIKE = frozenset("\u2212\u2796\u02d7\u2043")


def _fold_char(ch: str) -> str:
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        category = unicodedata.category(c)
        if category in ("Cf", "Mn", "Me"):
            continue
        if category == "Pd" or c in _MINUS_LIKE:
            out.append("-")
        else:
            out.append(str(unicodedata.decimal(c)) if category == "Nd" else c)
    return "".join(out)


class _FoldTable(dict[int, "int | str | None"]):
    """The `str.translate` table of `fold`, filled as characters are first seen (the Unicode
    range is too large to tabulate up front). ASCII maps to itself. Bounded: past the bound a
    character is folded again each time instead of remembered."""

    _BOUND = 1 << 16

    def __init__(self) -> None:
        super().__init__((cp, cp) for cp in range(128))

    def __missing__(self, cp: int) -> str | None:
        folded = _fold_char(chr(cp)) or None  # None: translate drops the character
        if len(self) < self._BOUND:
            self[cp] = folded
        return folded


FOLD_TABLE = _FoldTable()


def fold(text: str) -> str:
    """`text` as the detectors read it (see the module docstring). ASCII text is returned as it is."""
    return text if text.isascii() else text.translate(FOLD_TABLE)


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
# bytes.translate table: base64 (standard and URL-safe) characters kept, every other byte a space
# (padding too: "k=QUtJQ…" is two tokens; padding is put back before decoding).
# Splitting the translated bytes finds the tokens at C speed; a regex took twice as long.
_B64_TOKENS = bytes(b if b in _B64_ALPHABET else 0x20 for b in range(256))
_B64_URLSAFE = bytes.maketrans(b"-_", b"+/")
_B64_MIN = 8  # characters: six bytes
VIEW_SEPARATOR = "\n\x00\n"  # between an argument and its decoded views: no pattern spans it


def undo_escapes(text: str) -> str:
    """`text` with percent-encoding and HTML character references undone (one level), folded."""
    return fold(html.unescape(unquote(text)))


def base64_texts(text: str) -> Iterator[tuple[str, str]]:
    """(token, what it says folded) for each base64 token of `text` (eight characters or more)
    that decodes to UTF-8 text."""
    if len(text) < _B64_MIN:
        return
    tokens = text.encode("utf-8", "surrogatepass").translate(_B64_TOKENS).split()
    # Every token (a cap would let decoys in front carry the payload past it) but words:
    # "pneumonia", "Discharge", "care-team", "REDACTED" are not base64 of text, whose six-bit
    # groups of identifiers (digits, spaces, punctuation) always give digits or mixed case.
    # `islower()` drops most words at C speed; the rest are looked at one by one.
    for token in [t for t in tokens if len(t) >= _B64_MIN and not t.islower()]:
        letters = token.replace(b"-", b"").replace(b"_", b"")
        if letters.isalpha() and (letters.isupper() or letters.istitle()):
            continue
        try:
            decoded = base64.b64decode(token.translate(_B64_URLSAFE) + b"=" * (-len(token) % 4),
                                       validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            continue
        # Any valid UTF-8 is read: a threshold on "looks like text" would be padding away from
        # bypassed. Binary data (an image) is rarely valid UTF-8 past a few bytes.
        yield token.decode("ascii"), fold(decoded)


def decoded_views(text: str) -> str:
    """What `text` says once the common transport encodings are undone, folded, for the rules
    to scan beside it: percent-encoding and HTML character references (``123%2D45%2D6789``,
    ``&#45;``), and base64 tokens (eight characters or more) that decode to UTF-8 text. One level
    deep; "" when nothing decodes to something new. Other encodings (hex, ROT13, a cipher) are
    not undone."""
    views = []
    if "%" in text or "&" in text:
        plain = undo_escapes(text)
        if plain != text:
            views.append(plain)
    views.extend(decoded for _, decoded in base64_texts(text))
    return VIEW_SEPARATOR.join(views)
