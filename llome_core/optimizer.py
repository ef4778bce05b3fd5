"""What every optimizer exchanges with its driver: labelled batches in, proposals out.

An optimizer never calls the oracle. The driver (the command line, a Celery worker) calls
``propose()`` for candidates, has them measured, and hands the labels back with ``observe()``.
Between the two calls the optimizer's whole state is ``state_dict()``, a JSON-able dict, so a
campaign can stop for days (a wet lab) or after a crash and resume bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from llome_core.progress import Reporter


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
    def concat(parts: list["Labelled"]) -> "Labelled":
        return Labelled(
            torch.cat([p.sequences for p in parts]),
            torch.cat([p.values for p in parts]),
            torch.cat([p.feasible for p in parts]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequences": self.sequences.tolist(),
            "values": self.values.tolist(),
            "feasible": self.feasible.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], dim: int) -> "Labelled":
        seqs = torch.tensor(d["sequences"], dtype=torch.long).reshape(-1, dim)
        return cls(seqs, torch.tensor(d["values"], dtype=torch.float64), torch.tensor(d["feasible"]))


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
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def sequences(self) -> torch.Tensor:
        return torch.tensor([c.sequence for c in self.candidates], dtype=torch.long)


class Optimizer(Protocol):
    """The ask/tell interface shared by LLOME and the genetic algorithm."""

    def observe(self, batch: Labelled) -> None: ...

    def propose(self, reporter: Reporter | None = None) -> Proposal: ...

    def state_dict(self) -> dict[str, Any]: ...
