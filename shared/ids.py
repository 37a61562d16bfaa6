"""Prefixed, sortable identifiers (``exec_01jd…``): a ULID, lower-cased, behind a type prefix.

ULIDs sort by creation time, so keyset pagination on ``id`` is also chronological.
"""

from __future__ import annotations

from ulid import ULID

PREFIXES = frozenset(
    {"exec", "task", "cond", "cpt", "act", "cert", "wf", "alert", "ws", "key", "evt", "doc", "ntf", "dlv",
     "sig", "email", "wfs"}
)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{str(ULID()).lower()}"

