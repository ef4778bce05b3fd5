"""The defaults that follow the oracle budget: the refinement budget and the replay rule."""

from __future__ import annotations

import pytest

from llome_core.config import (
    GenerateConfig,
    LoopConfig,
    TrainConfig,
    default_replay_fraction,
    refinement_budget,
)


def outputs(n: int) -> int:
    seeds, samples = refinement_budget(n)
    return seeds * 10 * (1 + 6 * samples)


def test_the_paper_budget_is_the_papers_refinement_and_never_more() -> None:
    assert refinement_budget(2000) == (200, 10)
    assert outputs(2000) == 122_000  # 200 seeds x 10 steps x (1 + 6 x 10)
    for n in (2001, 5000, 100_000):
        assert refinement_budget(n) == (200, 10)


@pytest.mark.parametrize("n", [20, 64, 100, 500, 1000, 1500])
def test_below_the_paper_budget_the_volume_keeps_the_papers_61_outputs_per_call(n: int) -> None:
    assert outputs(n) == pytest.approx(61 * n, rel=0.05)
    seeds, samples = refinement_budget(n)
    assert seeds <= 200 and samples <= 10


def test_a_small_wetlab_batch_gets_a_tiny_budget_with_a_floor_of_seeds() -> None:
    assert refinement_budget(8) == (8, 1)  # 8 seeds x 10 steps x 7 outputs = 560
    assert refinement_budget(1) == (8, 1)
    assert outputs(8) < 1000 < outputs(2000) / 100
    with pytest.raises(ValueError, match="batch_size"):
        refinement_budget(0)


def test_loop_config_resolves_the_budget_and_explicit_values_win() -> None:
    small = LoopConfig(batch_size=8)
    assert (small.generate.num_seeds, small.generate.samples_per_step) == (8, 1)
    paper = LoopConfig()
    assert (paper.generate.num_seeds, paper.generate.samples_per_step) == (200, 10)
    mine = LoopConfig(batch_size=8, generate=GenerateConfig(num_seeds=50, samples_per_step=3))
    assert (mine.generate.num_seeds, mine.generate.samples_per_step) == (50, 3)
    half = LoopConfig(batch_size=8, generate=GenerateConfig(num_seeds=50))
    assert (half.generate.num_seeds, half.generate.samples_per_step) == (50, 1)
    # the resolved values are what the state stores, so a resumed run keeps them
    again = LoopConfig.from_dict(small.to_dict())
    assert again == small and again.generate.num_seeds == 8


def test_small_batches_replay_every_label_and_paper_sized_ones_none() -> None:
    assert default_replay_fraction(499) == 1.0 and default_replay_fraction(500) == 0.0
    assert LoopConfig(batch_size=8).train.replay_fraction == 1.0
    assert LoopConfig(batch_size=2000).train.replay_fraction == 0.0
    explicit = LoopConfig(batch_size=8, train=TrainConfig(replay_fraction=0.0))
    assert explicit.train.replay_fraction == 0.0
