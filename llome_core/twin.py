"""A synthetic twin of a wet-lab campaign: an Ehrlich instance of the same shape, and the forecast
read from its run.

The twin has the lab's alphabet size as ``num_states`` and its sequence length as ``dim``; the
motifs are chosen to fit (``twin_shape``). It tells how the optimizer behaves on a problem of that
shape with that budget (rounds and oracle calls to a given regret, the feasible and unique
fractions per round); it cannot tell how the lab's own landscape will behave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The paper's instance (v=32, L=32) has 4 motifs of 4 filling half the sequence; the twin keeps
# that density: motifs of 4 (8 from length 64 on, as the L=128 presets), as many as fill half
# the length, at most 8.
MOTIF_LENGTH_SHORT = 4
MOTIF_LENGTH_LONG = 8
LONG_FROM = 64
MAX_MOTIFS = 8
# Quantization: 4 levels per motif, as the paper's q = 4 (every element counts in a motif of 4,
# pairs of elements in a motif of 8), so a level is the same share of a motif at any length.
QUANTUM = 4
FORECAST_REGRETS = (0.5, 0.25, 0.0)


@dataclass(frozen=True)
class TwinShape:
    num_states: int
    dim: int
    num_motifs: int
    motif_length: int
    quantization: int


def twin_shape(num_states: int, dim: int) -> TwinShape:
    """The Ehrlich shape of a twin for an alphabet of ``num_states`` letters and length ``dim``."""
    if num_states < 2 or dim < 2:
        raise ValueError(f"a twin needs at least 2 states and length 2, got {num_states}, {dim}")
    k = MOTIF_LENGTH_LONG if dim >= LONG_FROM else MOTIF_LENGTH_SHORT
    k = max(2, min(k, dim // 2 if dim >= 4 else dim))
    c = max(1, min(MAX_MOTIFS, dim // (2 * k)))
    q = QUANTUM if k % QUANTUM == 0 else k
    return TwinShape(num_states, dim, c, k, q)


@dataclass(frozen=True)
class Milestone:
    """When the twin first reached ``regret`` (None: not yet)."""

    regret: float
    round: int | None
    oracle_calls: int | None


def milestones(
    rounds: Sequence[int],
    regrets: Sequence[float | None],
    calls: Sequence[int],
    targets: Sequence[float] = FORECAST_REGRETS,
) -> list[Milestone]:
    """The first round (and cumulative oracle calls) at which the best-so-far regret reached
    each target."""
    out = []
    for target in targets:
        hit = next(
            (i for i, g in enumerate(regrets) if g is not None and g <= target + 1e-12), None
        )
        out.append(
            Milestone(
                target,
                rounds[hit] if hit is not None else None,
                calls[hit] if hit is not None else None,
            )
        )
    return out
