"""Replicates: a sequence measured several times (technical replicates in one file, a re-test in
a later batch) has one label, the mean of its current measurements.

- The label is feasible unless every replicate is infeasible; its value is the mean of the
  feasible replicates (an infeasible replicate carries no number to average).
- ``n`` counts the current replicates; the standard error is ``s / sqrt(k)`` over the ``k``
  feasible values (none below two).
- A replicate lies far from its group when it is more than ``OUTLIER_ROBUST_SD`` robust standard
  deviations from the group's median (robust SD = 1.4826 x the median absolute deviation, the
  normal-consistent scale); groups of fewer than three say nothing.
- Optional per-batch normalisation for plate effects (``normalized``): each batch's scores
  against the mean of that batch's control measurements, before replicates are averaged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

OUTLIER_ROBUST_SD = 3.0
MAD_TO_SD = 1.4826  # the median absolute deviation of a normal sample is 0.6745 sd


@dataclass(frozen=True)
class Label:
    value: float | None  # mean of the feasible replicates; None when all are infeasible
    feasible: bool
    n: int  # current replicates
    se: float | None  # standard error of the mean (None below two feasible replicates)


def combine(replicates: list[tuple[float | None, bool]]) -> Label:
    """The label of one sequence from its current ``(value, feasible)`` replicates."""
    if not replicates:
        raise ValueError("a label needs at least one measurement")
    values = [v for v, ok in replicates if ok and v is not None]
    if not values:
        return Label(None, False, len(replicates), None)
    mean = math.fsum(values) / len(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return Label(mean, True, len(replicates), se)


def outliers(values: list[float]) -> list[int]:
    """Indices of ``values`` more than ``OUTLIER_ROBUST_SD`` robust SDs from their median."""
    if len(values) < 3:
        return []
    median = statistics.median(values)
    scale = MAD_TO_SD * statistics.median(abs(v - median) for v in values)
    if scale == 0.0:
        # Most replicates agree exactly: any that differs is far from them.
        return [i for i, v in enumerate(values) if v != median]
    return [i for i, v in enumerate(values) if abs(v - median) > OUTLIER_ROBUST_SD * scale]


NORMALIZATIONS = ("none", "control_ratio", "control_difference")


def normalized(value: float, control_mean: float | None, mode: str) -> float:
    """``value`` against the mean of its batch's control measurements (plate effects):
    ``control_ratio`` divides by it, ``control_difference`` subtracts it. A value with no
    control to compare with (seed data, a batch whose controls were not measured, a ratio to
    a zero mean) is used as measured."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize {mode!r}: expected one of {', '.join(NORMALIZATIONS)}")
    if mode == "none" or control_mean is None:
        return value
    if mode == "control_difference":
        return value - control_mean
    return value / control_mean if control_mean != 0.0 else value
