"""How people write what the service stores, as pure functions: mutations in ProteinGym
notation (``A14D:K2R``: wild-type letter, 1-based position, new letter) and label lifetimes
(``14d``). Schemas, services, the worker and the dashboard all read and write them through here.
"""

from __future__ import annotations

import re
from datetime import timedelta

_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str) -> timedelta:
    """``14d``, ``36h``, ``2w``, ``90m``, ``30s`` as a duration; ValueError otherwise."""
    match = _TTL.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"label_ttl {text!r} is not a positive duration like '14d', '36h' or '2w'")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def mutations(parent: str | None, child: str | None) -> str | None:
    """``child`` against ``parent``, position by position: ``""`` when they are equal, None when
    the notation cannot say it (either is missing, or their lengths differ)."""
    if parent is None or child is None or len(parent) != len(child):
        return None
    return ":".join(
        f"{a}{i + 1}{b}" for i, (a, b) in enumerate(zip(parent, child, strict=True)) if a != b
    )


def apply_mutations(parent: str, mutant: str) -> str:
    """The sequence ``mutant`` makes of ``parent``; ValueError when a token is malformed, out of
    range, or its wild-type letter is not the parent's."""
    seq = list(parent)
    for token in filter(None, (t.strip() for t in mutant.split(":"))):
        try:
            wt, pos, new = token[0], int(token[1:-1]), token[-1]
        except (IndexError, ValueError):
            raise ValueError(f"{token!r} is not a mutation like 'A14D'") from None
        if not 1 <= pos <= len(seq):
            raise ValueError(f"{token}: position {pos} is outside the parent (length {len(seq)})")
        if seq[pos - 1] != wt:
            raise ValueError(
                f"{token}: position {pos} of the parent is {seq[pos - 1]!r}, not {wt!r}"
            )
        seq[pos - 1] = new
    return "".join(seq)


def same_mutations(a: str, b: str) -> bool:
    """Whether two mutation lists name the same mutations, in any order."""
    return sorted(t.strip() for t in a.split(":") if t.strip()) == sorted(
        t.strip() for t in b.split(":") if t.strip()
    )
