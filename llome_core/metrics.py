"""Per-round metrics of an optimization run: regret, feasibility, uniqueness, edit distance.

All functions take ``(n, L)`` integer sequences and ``(n,)`` values/flags as torch tensors; values
of infeasible sequences are 0 (so their regret is the whole optimum).
"""

from __future__ import annotations

import torch


def regret(values: torch.Tensor, optimal_value: float = 1.0) -> torch.Tensor:
    """Per-sequence regret ``optimal_value - value`` (float64); infeasible rows (value 0) regret fully."""
    return optimal_value - torch.as_tensor(values, dtype=torch.float64).reshape(-1)


def min_regret(values: torch.Tensor, optimal_value: float = 1.0) -> float:
    """Simple regret of a batch: ``optimal_value - max value`` (the optimum itself if the batch is empty)."""
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.numel() == 0:
        return float(optimal_value)
    return float(optimal_value - values.max())


def feasible_frac(feasible: torch.Tensor) -> float:
    """Fraction of feasible rows (0 for an empty batch)."""
    feasible = torch.as_tensor(feasible, dtype=torch.bool).reshape(-1)
    return float(feasible.float().mean()) if feasible.numel() else 0.0


def unique_frac(sequences: torch.Tensor) -> float:
    """Distinct rows divided by rows (0 for an empty batch)."""
    sequences = torch.as_tensor(sequences)
    if sequences.shape[0] == 0:
        return 0.0
    return torch.unique(sequences, dim=0).shape[0] / sequences.shape[0]


def mean_edit_distance(sequences: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean normalized Hamming distance (differing positions / L) between each row of
    ``sequences`` (n, L) and the matching row of ``reference`` ((n, L), or (1, L) / (L,) for all):
    the one meaning of ``mean_edit_distance`` in every results table."""
    sequences = torch.as_tensor(sequences)
    reference = torch.as_tensor(reference)
    if reference.ndim == 1:
        reference = reference.unsqueeze(0)
    if sequences.shape[0] == 0:
        return 0.0
    if sequences.shape[-1] != reference.shape[-1] or reference.shape[0] not in (
        1,
        sequences.shape[0],
    ):
        raise ValueError(
            f"cannot compare sequences of shape {tuple(sequences.shape)} with reference of shape "
            f"{tuple(reference.shape)}: the reference needs 1 or {sequences.shape[0]} rows of the same length"
        )
    return float((sequences != reference).double().mean())
