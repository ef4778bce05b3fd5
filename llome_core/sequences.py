"""Sequences as integer tensors in the core, as strings over an alphabet at the edges.

The core works on ``(n, L)`` integer tensors of states in ``[0, v)``. The service and CSV files
write a sequence as a string of one letter per state: wet-lab campaigns bring their own alphabet
(e.g. the 20 amino acids); an Ehrlich function with v states uses the first v letters of
:data:`EHRLICH_LETTERS` (state 0 = ``A``, 25 = ``Z``, 26 = ``a`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EHRLICH_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class SequenceError(ValueError):
    """A sequence that does not fit the alphabet or the length; the message says why."""


@dataclass(frozen=True)
class Alphabet:
    """An ordered set of one-character states; a state's index is its integer code."""

    letters: str

    def __post_init__(self) -> None:
        if len(self.letters) < 2:
            raise ValueError("an alphabet needs at least 2 letters")
        if len(set(self.letters)) != len(self.letters):
            raise ValueError(f"alphabet {self.letters!r} repeats a letter")
        if any(c.isspace() or c == "," for c in self.letters):
            raise ValueError("alphabet letters may not be whitespace or commas")

    @classmethod
    def for_ehrlich(cls, num_states: int) -> Alphabet:
        if not 2 <= num_states <= len(EHRLICH_LETTERS):
            raise ValueError(f"num_states must be in [2, {len(EHRLICH_LETTERS)}], got {num_states}")
        return cls(EHRLICH_LETTERS[:num_states])

    @property
    def size(self) -> int:
        return len(self.letters)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.letters)}

    def check(self, text: str, length: int | None = None) -> None:
        """Raise :class:`SequenceError` saying which letter or length is wrong (``text`` as is:
        no stripping). Uploads check every row, so the common case is one set operation."""
        index = self._index
        if not index.keys() >= set(text):
            bad = sorted({c for c in text if c not in index})
            raise SequenceError(
                f"letters {''.join(bad)!r} are not in the alphabet {self.letters!r}"
            )
        if length is not None and len(text) != length:
            raise SequenceError(f"length {len(text)}, expected {length}")

    def encode_one(self, text: str, length: int | None = None) -> list[int]:
        """States of one sequence; raises :class:`SequenceError` saying which letter or length is wrong."""
        text = text.strip()
        self.check(text, length)
        index = self._index
        return [index[c] for c in text]

    def encode(self, texts: list[str], length: int) -> torch.Tensor:
        import torch  # here, not above: the web service checks letters and never loads torch

        return torch.tensor([self.encode_one(t, length) for t in texts], dtype=torch.long).reshape(
            len(texts), length
        )

    def decode_one(self, states: torch.Tensor | list[int] | tuple[int, ...]) -> str:
        return "".join(self.letters[int(s)] for s in states)

    def decode(self, x: torch.Tensor) -> list[str]:
        return ["".join(self.letters[s] for s in row) for row in x.tolist()]


def pairwise_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` matrix of mismatch counts between rows of ``a`` (n, L) and ``b`` (m, L)."""
    import torch

    n, length = a.shape
    out = torch.zeros(n, b.shape[0], dtype=torch.int32)
    for pos in range(length):  # L passes over an (n, m) matrix: no (n, m, L) temporary
        out += (a[:, pos, None] != b[None, :, pos]).int()
    return out
