"""The filter (spec §3.6): exclusion, the likelihood quantile, a uniform sample of n."""

from __future__ import annotations

import pytest
import torch

from llome_core.optimizer import Candidate
from llome_core.selection import select


def _pool(m: int, seed: int = 0) -> list[Candidate]:
    g = torch.Generator().manual_seed(seed)
    ll = (-torch.rand(m, generator=g, dtype=torch.float64) * 3).tolist()
    return [Candidate(sequence=(i // 10, i % 10), log_likelihood=ll[i]) for i in range(m)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_excluded_sequences_are_never_selected():
    pool = _pool(50)
    exclude = {c.sequence for c in pool[::2]}
    chosen = select(pool, 100, exclude=exclude, generator=_gen())
    assert {c.sequence for c in chosen} == {c.sequence for c in pool[1::2]}
    chosen = select(pool, 10, exclude=exclude, generator=_gen())
    assert len(chosen) == 10 and not {c.sequence for c in chosen} & exclude


def test_returns_everything_left_when_at_most_n_remain_in_pool_order():
    pool = _pool(20)
    chosen = select(pool + pool[:5], 20, generator=_gen())  # duplicates count once
    assert chosen == pool


def test_keeps_only_candidates_at_or_above_the_likelihood_quantile():
    pool = _pool(200)
    ll = torch.tensor([c.log_likelihood for c in pool], dtype=torch.float64)
    threshold = torch.quantile(ll, 0.6).item()
    chosen = select(pool, 30, quantile=0.6, generator=_gen())
    assert len(chosen) == 30
    assert len({c.sequence for c in chosen}) == 30
    assert all(c.log_likelihood >= threshold for c in chosen)
    # the sample is uniform over the top set, not simply its best members
    top = sorted(pool, key=lambda c: -c.log_likelihood)[:30]
    assert {c.sequence for c in chosen} != {c.sequence for c in top}


def test_selection_is_deterministic_given_the_generator():
    pool = _pool(200)
    a = select(pool, 25, generator=_gen(3))
    b = select(pool, 25, generator=_gen(3))
    c = select(pool, 25, generator=_gen(4))
    assert a == b
    assert a != c


def test_fills_up_with_the_most_likely_when_the_top_set_is_smaller_than_n():
    pool = _pool(100)
    chosen = select(pool, 70, quantile=0.6, generator=_gen())  # top 40% is 40 < 70
    best = sorted(pool, key=lambda c: -c.log_likelihood)[:70]
    assert {c.sequence for c in chosen} == {c.sequence for c in best}


def test_candidates_without_likelihood_rank_last():
    pool = _pool(40)
    pool += [Candidate(sequence=(9, 100 + i)) for i in range(40)]
    chosen = select(pool, 30, quantile=0.5, generator=_gen())
    assert all(c.log_likelihood is not None for c in chosen)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="quantile"):
        select(_pool(5), 2, quantile=1.5, generator=_gen())
    with pytest.raises(ValueError, match="n must be"):
        select(_pool(5), -1, generator=_gen())
