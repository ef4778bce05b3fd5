"""What every optimizer exchanges with its driver: labelled batches in, proposals out.

An optimizer never calls the oracle. The driver (``llome bench``, a Celery worker) asks for a
batch with ``ask(n)``, has it measured, and hands the labels back with ``tell(labels)``;
``drop(sequences, reason)`` says a proposed sequence will get no label (withdrawn by the lab,
known elsewhere): it is never proposed again, and for the genetic algorithm it counts as failed.
Between two calls the optimizer's whole state is ``state()``, a JSON-able dict, so a campaign can
stop for days (a wet lab) or after a crash and resume bit for bit (:func:`llome_core.resume.from_state`).

Batch composition (:func:`compose`) is part of ``ask``: every driver gets the same batch for the
same state, seed and arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from llome_core.progress import Reporter
from llome_core.sequences import pairwise_hamming

Key = tuple[int, ...]


@dataclass
class Labelled:
    """Oracle results: ``sequences`` (n, L) long, ``values`` (n,) float, ``feasible`` (n,) bool.

    Infeasible rows carry value 0 (never +-inf); ``feasible`` says why they score nothing.
    """

    sequences: torch.Tensor
    values: torch.Tensor
    feasible: torch.Tensor

    def __post_init__(self) -> None:
        self.sequences = torch.as_tensor(self.sequences, dtype=torch.long)
        self.values = torch.as_tensor(self.values, dtype=torch.float64).reshape(-1)
        self.feasible = torch.as_tensor(self.feasible, dtype=torch.bool).reshape(-1)
        if self.sequences.ndim != 2:
            raise ValueError(f"sequences must be (n, L), got shape {tuple(self.sequences.shape)}")
        n = self.sequences.shape[0]
        if self.values.shape[0] != n or self.feasible.shape[0] != n:
            raise ValueError("sequences, values and feasible must have the same number of rows")
        if not torch.isfinite(self.values).all():
            raise ValueError("values must be finite: mark infeasible rows with feasible=False")
        self.values = torch.where(self.feasible, self.values, torch.zeros_like(self.values))

    def __len__(self) -> int:
        return int(self.sequences.shape[0])

    @staticmethod
    def empty(dim: int) -> Labelled:
        """No labels, for sequences of length ``dim``."""
        return Labelled(
            torch.zeros(0, dim, dtype=torch.long),
            torch.zeros(0, dtype=torch.float64),
            torch.zeros(0, dtype=torch.bool),
        )

    @staticmethod
    def concat(parts: list[Labelled]) -> Labelled:
        """The rows of ``parts`` one after another, repeated sequences included (see :meth:`merge`)."""
        return Labelled(
            torch.cat([p.sequences for p in parts]),
            torch.cat([p.values for p in parts]),
            torch.cat([p.feasible for p in parts]),
        )

    def merge(self, newer: Labelled) -> Labelled:
        """These labels updated by ``newer``, latest wins: a sequence labelled again keeps its
        first-seen place and takes the newer value and feasibility (a driver sends a sequence's
        current label: the mean of its replicates, or a correction); new sequences follow in
        arrival order. The result holds each sequence once."""
        return self.merge_positions(newer)[0]

    def merge_positions(self, newer: Labelled) -> tuple[Labelled, torch.Tensor]:
        """:meth:`merge`, and for each row of ``newer`` the row of the result that holds it."""
        if self.sequences.shape[1] != newer.sequences.shape[1]:
            raise ValueError(
                f"cannot merge sequences of length {newer.sequences.shape[1]} into labels of "
                f"length {self.sequences.shape[1]}"
            )
        both = Labelled.concat([self, newer])
        n = len(both)
        if n == 0:
            return both, torch.zeros(0, dtype=torch.long)
        _, group = torch.unique(both.sequences, dim=0, return_inverse=True)
        size = int(group.max()) + 1
        rows = torch.arange(n)
        # Each distinct sequence sits where it first appears and carries its last label.
        first = torch.full((size,), n).scatter_reduce(0, group, rows, reduce="amin")
        last = torch.full((size,), -1).scatter_reduce(0, group, rows, reduce="amax")
        order = torch.argsort(first)
        slot = torch.empty_like(order)
        slot[order] = torch.arange(size)
        merged = Labelled(
            both.sequences[first[order]], both.values[last[order]], both.feasible[last[order]]
        )
        return merged, slot[group[len(self) :]]

    def unique(self) -> Labelled:
        """Each sequence once, in first-seen order, with its last label (:meth:`merge`)."""
        return Labelled.empty(self.sequences.shape[1]).merge(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequences": self.sequences.tolist(),
            "values": self.values.tolist(),
            "feasible": self.feasible.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], dim: int) -> Labelled:
        seqs = torch.tensor(d["sequences"], dtype=torch.long).reshape(-1, dim)
        return cls(
            seqs, torch.tensor(d["values"], dtype=torch.float64), torch.tensor(d["feasible"])
        )


@dataclass
class Candidate:
    """One proposed sequence and why it was proposed (its lineage)."""

    sequence: tuple[int, ...]
    parent: tuple[int, ...] | None = None  # the input it was refined from
    seed: tuple[int, ...] | None = None  # the first input of its trajectory
    refinement_step: int | None = None
    temperature: float | None = None  # None for greedy decoding (and for the GA)
    log_likelihood: float | None = None  # length-normalized, under the scaled distribution


@dataclass
class Proposal:
    """A batch of candidates for the oracle plus the metrics of how it was made."""

    candidates: list[Candidate]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def sequences(self) -> torch.Tensor:
        return torch.tensor([c.sequence for c in self.candidates], dtype=torch.long)


def keys(sequences: torch.Tensor | Iterable[Iterable[int]]) -> list[Key]:
    """Rows of a (n, L) tensor or of any nested sequence as hashable tuples."""
    if isinstance(sequences, torch.Tensor):
        return [tuple(r) for r in sequences.tolist()]
    return [tuple(int(x) for x in r) for r in sequences]


def edit_distance(candidates: list[Candidate]) -> float | None:
    """Mean normalized Hamming distance from each candidate to the sequence it was made from
    (its ``parent``); None when no candidate has a parent."""
    pairs = [(c.sequence, c.parent) for c in candidates if c.parent is not None]
    if not pairs:
        return None
    a = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.long)
    return float((a != b).double().mean())


def compose(
    candidates: list[Candidate],
    *,
    measured: torch.Tensor,
    exclude: Iterable[Key] = (),
    min_hamming: int = 0,
) -> tuple[list[Candidate], list[Candidate], dict[str, Any]]:
    """Batch composition, in proposal order (best first): ``exclude`` drops listed sequences;
    ``min_hamming`` keeps a candidate only if it differs in at least that many positions from every
    ``measured`` sequence and every candidate kept before it. Returns (kept, removed, counts of
    what was removed and why) for the round's metrics."""
    info: dict[str, Any] = {"min_hamming": int(min_hamming), "excluded": 0, "too_close": 0}
    banned = set(exclude)
    keep = torch.tensor([c.sequence not in banned for c in candidates], dtype=torch.bool)
    info["excluded"] = int((~keep).sum())
    if min_hamming > 0 and candidates:
        seqs = torch.tensor([list(c.sequence) for c in candidates], dtype=torch.long)
        if measured.shape[0]:
            keep &= (pairwise_hamming(seqs, measured) >= min_hamming).all(dim=1)
        close = pairwise_hamming(seqs, seqs) < min_hamming
        blocked = torch.zeros(len(candidates), dtype=torch.bool)
        for i in range(len(candidates)):  # greedy: one vector op per candidate
            if keep[i] and not blocked[i]:
                blocked |= close[i]
            else:
                keep[i] = False
        info["too_close"] = int(len(candidates) - info["excluded"] - int(keep.sum()))
    flags = keep.tolist()
    kept = [c for c, k in zip(candidates, flags) if k]
    removed = [c for c, k in zip(candidates, flags) if not k]
    return kept, removed, info


class Optimizer(Protocol):
    """The campaign-level ask/tell interface shared by LLOME and the genetic algorithm.

    Labels: a label told for a sequence that already has one REPLACES it (latest wins,
    :meth:`Labelled.merge`). The driver sends each sequence's current label (the mean of its
    replicates so far, or the label after a correction), so a later replicate or a correction is
    what the optimizer trains and selects on from then; its label set never holds a sequence twice.
    """

    def ask(
        self,
        n: int | None = None,
        *,
        exclude: Iterable[Key] = (),
        min_hamming: int = 0,
        reporter: Reporter | None = None,
    ) -> Proposal:
        """At most ``n`` new candidates (default: the configured batch), filtered and composed:
        never a sequence of ``known()`` or ``exclude``; with ``min_hamming``, apart from each other
        and from every labelled sequence. Candidates composition removes are dropped."""
        ...

    def tell(self, labels: Labelled) -> None:
        """Oracle labels, of the seed data or of proposed candidates, in any pieces; a sequence
        told again takes the newer label (latest wins, see the class docstring)."""
        ...

    def drop(self, sequences: torch.Tensor, reason: str) -> None:
        """These sequences get no label and are never proposed (again)."""
        ...

    def known(self) -> set[Key]:
        """Every sequence labelled, proposed and waiting for a label, or dropped."""
        ...

    def state(self) -> dict[str, Any]:
        """The whole state as JSON-able data; :func:`llome_core.resume.from_state` resumes it."""
        ...
