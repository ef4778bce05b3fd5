"""The filter (``shared/spec/algorithm.md`` §3.6): choose at most ``n`` candidates for the oracle.

1. Drop duplicates (first occurrence kept) and every sequence in ``exclude`` (already labelled
   or pending in the campaign).
2. If more than ``n`` remain, keep those whose likelihood is at or above the ``quantile`` of the
   remaining likelihoods (0.6: the top 40%), then draw a uniform sample of ``n`` without
   replacement with the caller's generator.

**[ours]** When the top-quantile set holds fewer than ``n`` candidates (small pools), the threshold
is lowered just enough to keep the ``n`` most likely, so the round's oracle budget is used.
Candidates without a likelihood rank below all others.
"""

from __future__ import annotations

import torch

from llome_core.optimizer import Candidate


def select(
    candidates: list[Candidate],
    n: int,
    *,
    exclude: set[tuple[int, ...]] | frozenset[tuple[int, ...]] = frozenset(),
    quantile: float = 0.6,
    generator: torch.Generator,
) -> list[Candidate]:
    """At most ``n`` candidates, in their pool order; deterministic given ``generator``'s state."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    seen = set(exclude)
    pool: list[Candidate] = []
    for c in candidates:
        if c.sequence not in seen:
            seen.add(c.sequence)
            pool.append(c)
    if len(pool) <= n:
        return pool
    ll = torch.tensor(
        [float("-inf") if c.log_likelihood is None else float(c.log_likelihood) for c in pool],
        dtype=torch.float64,
    )
    finite = torch.isfinite(ll)
    if finite.any():
        # Missing likelihoods become one below the lowest real one: they rank last.
        ll = torch.where(finite, ll, ll[finite].min() - 1.0)
        keep = (ll >= torch.quantile(ll, quantile)).nonzero().reshape(-1)
        if keep.numel() < n:
            # Fewer than n in the top set: take the n most likely (stable: earlier wins ties).
            keep = torch.argsort(-ll, stable=True)[:n].sort().values
    else:
        keep = torch.arange(len(pool))
    if keep.numel() > n:
        keep = keep[torch.randperm(keep.numel(), generator=generator)[:n]].sort().values
    return [pool[i] for i in keep.tolist()]
