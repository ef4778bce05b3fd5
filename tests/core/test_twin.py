"""The twin's Ehrlich shape fits every alphabet and length, and its optimum scores 1; the
forecast's milestones are the first rounds reaching each regret."""

from __future__ import annotations

import pytest

from llome_core.config import EhrlichConfig
from llome_core.ehrlich import Ehrlich
from llome_core.twin import milestones, twin_shape


@pytest.mark.parametrize(
    "v, length",
    [(20, 8), (4, 10), (6, 8), (20, 32), (32, 32), (20, 128), (20, 300), (2, 3), (62, 4096)],
)
def test_the_twin_shape_is_a_valid_instance_whose_optimum_scores_one(v: int, length: int) -> None:
    s = twin_shape(v, length)
    assert (s.num_states, s.dim) == (v, length)
    assert s.num_motifs * s.motif_length <= length and s.motif_length % s.quantization == 0
    f = Ehrlich.from_config(EhrlichConfig(v, length, s.num_motifs, s.motif_length, s.quantization))
    assert float(f.evaluate(f.optimal_solution())[0][0]) == 1.0


def test_the_paper_shape_is_the_papers_instance() -> None:
    s = twin_shape(32, 32)
    assert (s.num_motifs, s.motif_length, s.quantization) == (4, 4, 4)
    long = twin_shape(32, 128)
    assert (long.num_motifs, long.motif_length, long.quantization) == (8, 8, 4)


def test_milestones_are_the_first_rounds_reaching_each_regret() -> None:
    got = milestones([0, 1, 2, 3], [0.9, 0.5, 0.3, 0.0], [100, 120, 140, 160])
    assert [(m.regret, m.round, m.oracle_calls) for m in got] == [
        (0.5, 1, 120),
        (0.25, 3, 160),
        (0.0, 3, 160),
    ]
    assert milestones([0, 1], [0.9, None], [10, 20])[0].round is None


def test_a_shape_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 states"):
        twin_shape(1, 8)
