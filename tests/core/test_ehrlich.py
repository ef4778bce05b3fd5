"""Ehrlich functions: parity with pytorch-holo (golden fixtures) and the spec's properties."""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from llome_core.config import EhrlichConfig
from llome_core.ehrlich import PRESETS, Ehrlich, preset_config

DATA = Path(__file__).resolve().parents[1] / "data" / "holo_ehrlich.json"


@lru_cache(maxsize=1)
def fixtures() -> list[dict]:
    return json.loads(DATA.read_text())["instances"]


@cache
def built(index: int) -> Ehrlich:
    return Ehrlich(**fixtures()[index]["params"])


def _ids() -> list[str]:
    out = []
    for i, fx in enumerate(fixtures()):
        p = fx["params"]
        out.append(
            f"{i}-v{p['num_states']}-L{p['dim']}-c{p['num_motifs']}-k{p['motif_length']}"
            f"-q{p['quantization']}-e{p['epistasis_factor']}-s{p['random_seed']}"
        )
    return out


BUILT = [i for i, fx in enumerate(fixtures()) if "error" not in fx]
REJECTED = [i for i, fx in enumerate(fixtures()) if "error" in fx]
IDS = _ids()


@pytest.fixture(scope="module")
def paper() -> Ehrlich:
    return Ehrlich.preset("ehr_v-32_l-032_m-4_c-4_q-4")


# ---------------------------------------------------------------- parity with holo


def test_fixtures_cover_the_presets_and_random_shapes():
    shapes = {
        tuple(
            fx["params"][k]
            for k in ("num_states", "dim", "num_motifs", "motif_length", "quantization")
        )
        for fx in fixtures()
    }
    for cfg in PRESETS.values():
        assert (
            cfg.num_states,
            cfg.dim,
            cfg.num_motifs,
            cfg.motif_length,
            cfg.quantization,
        ) in shapes
    assert len(BUILT) >= 40 and REJECTED


@pytest.mark.parametrize("index", BUILT, ids=[IDS[i] for i in BUILT])
def test_instance_matches_holo(index: int):
    fx = fixtures()[index]
    f = built(index)
    assert f.transition_matrix.dtype == torch.float32
    # Probabilities to the last float32 bit where it can be: the reductions that normalize
    # them round differently on different CPUs (1 ulp seen between AVX2 and AVX-512 machines,
    # holo's own code included). The feasible set, the support of the chain, is exact.
    matrix = torch.tensor(fx["transition_matrix"], dtype=torch.float32)
    assert torch.equal(f.transition_matrix == 0, matrix == 0)
    torch.testing.assert_close(f.transition_matrix, matrix, rtol=0, atol=1e-7)
    torch.testing.assert_close(
        f.stationary_dist,
        torch.tensor(fx["stationary_dist"], dtype=torch.float32),
        rtol=1e-5,
        atol=1e-7,
    )  # solved from the matrix: a few ulps
    assert [m.tolist() for m in f.motifs] == fx["motifs"]
    assert [s.tolist() for s in f.spacings] == fx["spacings"]
    for n, expected in fx["initial_solution"].items():
        assert f.initial_solution(int(n)).tolist() == expected
    assert f.optimal_solution()[0].tolist() == fx["optimal_solution"]


@pytest.mark.parametrize("index", BUILT, ids=[IDS[i] for i in BUILT])
def test_values_match_holo_on_random_dmp_and_near_optimal_sequences(index: int):
    fx = fixtures()[index]
    f = built(index)
    x = torch.tensor(fx["sequences"])
    values, feasible = f.evaluate(x)
    expected_feasible = torch.tensor([v is not None for v in fx["values"]])
    expected = torch.tensor([0.0 if v is None else v for v in fx["values"]], dtype=torch.float32)
    assert torch.equal(feasible, expected_feasible)
    assert torch.equal(values, expected)  # bit for bit, float32
    assert set(fx["kinds"]) == {"random", "dmp", "near_optimal", "planted", "optimal"}


@pytest.mark.parametrize("index", REJECTED, ids=[IDS[i] for i in REJECTED])
def test_draws_holo_rejects_raise_a_clear_error(index: int):
    with pytest.raises(ValueError, match="not ergodic"):
        Ehrlich(**fixtures()[index]["params"])


# ---------------------------------------------------------------- the paper's instance


def test_paper_instance_has_the_spec_motifs_and_gaps(paper: Ehrlich):
    assert [m.tolist() for m in paper.motifs] == [
        [23, 21, 10, 27],
        [14, 9, 31, 9],
        [31, 29, 6, 21],
        [10, 10, 8, 11],
    ]
    assert [s.tolist() for s in paper.spacings] == [[2, 1, 3], [1, 2, 2], [2, 2, 1], [2, 3, 1]]
    assert [o.tolist() for o in paper.offsets] == [
        [0, 2, 3, 6],
        [0, 1, 3, 5],
        [0, 2, 4, 5],
        [0, 2, 5, 6],
    ]


def test_paper_initial_solution_scores_0_046875(paper: Ehrlich):
    x0 = paper.initial_solution(1)
    assert x0.shape == (1, 32)
    assert float(paper(x0)[0]) == 0.046875


def test_paper_optimal_solution_is_the_spec_sequence(paper: Ehrlich):
    expected = (
        "23 23 21 10 10 10 27 14 9 9 31 31 9 31 31 29 29 6 21 10 10 10 10 10 8 11 11 11 11 11 11 11"
    )
    assert paper.optimal_solution()[0].tolist() == [int(s) for s in expected.split()]


def test_paper_transition_matrix_bans_six_or_seven_states_per_row(paper: Ehrlich):
    banned = (paper.transition_matrix == 0).sum(dim=1)
    assert set(banned.tolist()) <= {6, 7}
    assert torch.all(paper.transition_matrix.diagonal() > 0)
    assert torch.allclose(paper.transition_matrix.sum(dim=1), torch.ones(32))


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("index", BUILT[::5], ids=[IDS[i] for i in BUILT[::5]])
def test_values_lie_in_unit_interval_and_the_optimum_scores_one(index: int):
    f = built(index)
    g = torch.Generator().manual_seed(index)
    x = torch.cat([f.random_solution(200, g), f.initial_solution(200)])
    values, feasible = f.evaluate(x)
    assert values.min() >= 0 and values.max() <= 1
    assert float(f(f.optimal_solution())[0]) == 1.0
    assert torch.all(feasible[200:])  # DMP samples never take a banned transition


def test_infeasible_rows_score_zero_and_are_flagged(paper: Ehrlich):
    x = paper.optimal_solution().repeat(3, 1)
    banned_next = int(torch.nonzero(paper.transition_matrix[x[0, 4]] == 0)[0])
    x[1, 5] = banned_next  # the transition x[4] -> x[5] is now banned
    values, feasible = paper.evaluate(x)
    assert feasible.tolist() == [True, False, True]
    assert values.tolist() == [1.0, 0.0, 1.0]
    assert paper.is_feasible(x).tolist() == [True, False, True]


def test_evaluation_is_chunk_invariant_and_accepts_small_integer_dtypes(paper: Ehrlich):
    # more rows than one kernel chunk (8192), feasible and infeasible mixed
    x = torch.cat(
        [
            paper.initial_solution(300).repeat(30, 1),
            paper.random_solution(1000, torch.Generator().manual_seed(1)),
        ]
    )
    values, feasible = paper.evaluate(x)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        v2, f2 = paper.evaluate(x.to(dtype))
        assert torch.equal(v2, values) and torch.equal(f2, feasible)
    v3, _ = paper.evaluate(x.numpy()[::-1].copy())
    assert torch.equal(v3, values.flip(0))
    one = paper(x[5])
    assert one.shape == (1,) and float(one[0]) == float(values[5])


def test_instances_are_deterministic_and_depend_on_the_seed():
    a, b, c = (
        Ehrlich(8, 16, 2, 4, 2, random_seed=5),
        Ehrlich(8, 16, 2, 4, 2, random_seed=5),
        Ehrlich(8, 16, 2, 4, 2, random_seed=6),
    )
    assert torch.equal(a.transition_matrix, b.transition_matrix)
    assert not torch.equal(a.transition_matrix, c.transition_matrix)


def test_initial_solution_reseeds_on_every_call(paper: Ehrlich):
    assert torch.equal(paper.initial_solution(3), paper.initial_solution(3))
    # as in holo, the first of three samples is not the single sample (one multinomial call each)
    assert not torch.equal(paper.initial_solution(1)[0], paper.initial_solution(3)[0])
    with pytest.raises(ValueError, match="positive"):
        paper.initial_solution(0)


def test_presets_and_configs_build_the_same_instances():
    assert len(PRESETS) == 6
    cfg = preset_config("ehr_v-32_l-128_m-8_c-8_q-8", random_seed=3)
    assert (
        cfg.num_states,
        cfg.dim,
        cfg.num_motifs,
        cfg.motif_length,
        cfg.quantization,
        cfg.random_seed,
    ) == (32, 128, 8, 8, 8, 3)
    a = Ehrlich.from_config(EhrlichConfig())
    b = Ehrlich.preset("ehr_v-32_l-032_m-4_c-4_q-4")
    assert a.config == b.config and torch.equal(a.transition_matrix, b.transition_matrix)
    with pytest.raises(ValueError, match="preset name"):
        Ehrlich.preset("ehr_v-32")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_states=32, dim=10, num_motifs=4, motif_length=4), "exceeds dim"),
        (dict(num_states=32, dim=32, num_motifs=4, motif_length=4, quantization=3), "must divide"),
        (dict(num_states=1, dim=32, num_motifs=4, motif_length=4), "num_states"),
        (dict(num_states=32, dim=32, num_motifs=0, motif_length=4), "num_motifs"),
        (dict(num_states=32, dim=32, num_motifs=4, motif_length=1), "motif_length"),
        (dict(num_states=32, dim=32.0, num_motifs=4, motif_length=4), "dim"),
        (
            dict(
                num_states=32, dim=32, num_motifs=4, motif_length=4, epistasis_factor=float("nan")
            ),
            "epistasis",
        ),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Ehrlich(**kwargs)


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(2, 31, dtype=torch.long), "length 32"),
        (torch.full((2, 32), 32, dtype=torch.long), r"\[0, 32\)"),
        (torch.full((2, 32), -1, dtype=torch.long), r"\[0, 32\)"),
        (torch.zeros(2, 32), "integer"),
        (torch.zeros(2, 32, dtype=torch.bool), "integer"),
        (torch.zeros(2, 2, 32, dtype=torch.long), "shape"),
        (np.zeros((2, 32), dtype=np.float64), "integer"),
    ],
)
def test_bad_sequences_raise_clear_errors(paper: Ehrlich, x, message):
    with pytest.raises(ValueError, match=message):
        paper(x)
    with pytest.raises(ValueError, match=message):
        paper.is_feasible(x)
