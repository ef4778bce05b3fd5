"""PropEn pairs and DPO triples (spec §3.3) checked against brute-force enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch

from llome_core.config import TrainConfig
from llome_core.datasets import (
    NoTrainingPairs,
    make_pairs,
    make_triples,
    nearest_neighbours,
    refinement_seeds,
    unique_rows,
)
from llome_core.optimizer import Labelled
from llome_core.text import TextFormat

V, L = 8, 8  # threshold 0.25 -> at most 2 mismatches


def clustered(n: int, seed: int, infeasible: float = 0.2, parents: int = 4) -> Labelled:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, V, (parents, L), generator=g)
    seqs = base[torch.randint(0, parents, (n,), generator=g)]
    mutate = torch.rand(n, L, generator=g) < 0.2
    seqs = torch.where(mutate, torch.randint(0, V, (n, L), generator=g), seqs)
    values = torch.rand(n, generator=g).double()
    feasible = torch.rand(n, generator=g) >= infeasible
    return Labelled(seqs, values, feasible)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def brute_pairs(data: Labelled, max_mis: int) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    d = unique_rows(data)
    seqs, f = d.sequences.tolist(), d.values.tolist()
    out = set()
    for i, j in itertools.combinations(range(len(seqs)), 2):
        mis = sum(a != b for a, b in zip(seqs[i], seqs[j]))
        if mis <= max_mis and f[i] != f[j]:
            lo, hi = (i, j) if f[i] < f[j] else (j, i)
            out.add((tuple(seqs[lo]), tuple(seqs[hi])))
    return out


def as_pairs(ex) -> set[tuple[tuple[int, ...], tuple[int, ...]]]:
    return {(tuple(x), tuple(y)) for x, y in zip(ex.inputs.tolist(), ex.targets.tolist())}


def test_pairs_are_exactly_the_neighbour_pairs_within_the_threshold():
    data = clustered(40, seed=1)
    cfg = TrainConfig(max_neighbours=100, infeasible_cap=1.0)  # every neighbour, no cap
    ex = make_pairs(data, cfg, gen())
    expected = brute_pairs(data, max_mis=2)
    assert len(expected) > 10
    assert as_pairs(ex) == expected
    assert len(ex) == len(expected)  # each unordered pair once


def test_distance_exactly_at_the_threshold_pairs_and_one_more_does_not():
    x = [0] * L
    at = [1, 1] + [0] * (L - 2)  # 2 mismatches = 0.25
    beyond = [2, 2, 2] + [0] * (L - 3)  # 3 mismatches = 0.375
    data = Labelled(
        torch.tensor([x, at, beyond]),
        torch.tensor([0.1, 0.5, 0.9]),
        torch.ones(3, dtype=torch.bool),
    )
    ex = make_pairs(data, TrainConfig(), gen())
    # x-at (2) and at-beyond (distance 3) vs x-beyond (3): only x -> at qualifies
    assert as_pairs(ex) == {(tuple(x), tuple(at))}


def test_pairs_point_from_worse_to_better_with_positive_margin_rewards():
    data = clustered(60, seed=2)
    ex = make_pairs(data, TrainConfig(), gen())
    assert (ex.target_values > ex.input_values).all()
    assert torch.equal(ex.rewards, ex.target_values - ex.input_values)
    assert (ex.rewards > 0).all()


def test_equal_scores_never_pair_so_infeasible_sequences_are_only_inputs():
    x = [0] * L
    y = [1] + [0] * (L - 1)
    z = [0] * (L - 1) + [1]
    data = Labelled(
        torch.tensor([x, y, z]),
        torch.tensor([0.0, 0.0, 0.4]),
        torch.tensor([False, False, True]),
    )
    ex = make_pairs(data, TrainConfig(infeasible_cap=1.0), gen())
    # x and y are both infeasible (score 0): no pair between them; both pair with z as inputs.
    assert as_pairs(ex) == {(tuple(x), tuple(z)), (tuple(y), tuple(z))}
    assert not ex.input_feasible.any()


def test_duplicate_sequences_are_dropped_keeping_the_first_place_and_the_latest_label():
    seqs = torch.tensor([[0] * L, [1] + [0] * (L - 1), [0] * L])
    data = Labelled(
        seqs, torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64), torch.ones(3, dtype=torch.bool)
    )
    uniq = unique_rows(data)
    assert uniq.sequences.tolist() == seqs[:2].tolist()
    assert uniq.values.tolist() == [0.9, 0.6]
    ex = make_pairs(data, TrainConfig(), gen())
    assert ex.num_sequences == 2 and len(ex) == 1


def test_infeasible_input_pairs_are_capped_at_the_configured_share():
    data = clustered(80, seed=3, infeasible=0.5)
    uncapped = make_pairs(data, TrainConfig(infeasible_cap=1.0), gen())
    n_bad = int((~uncapped.input_feasible).sum())
    n_ok = len(uncapped) - n_bad
    assert n_bad > n_ok * 0.2  # the cap has something to remove
    capped = make_pairs(data, TrainConfig(infeasible_cap=0.1), gen())
    kept_bad = int((~capped.input_feasible).sum())
    assert kept_bad == round(n_ok * 0.1 / 0.9)
    assert int(capped.input_feasible.sum()) == n_ok  # feasible-input pairs are all kept
    assert kept_bad / len(capped) <= 0.1 + 1 / len(capped)
    assert as_pairs(capped) <= as_pairs(uncapped)


def test_no_pairs_says_why_and_what_to_do():
    # Four sequences, pairwise at least 4 of 8 positions apart.
    seqs = torch.tensor([[i] * 4 + [i + 1] * 4 for i in range(0, 8, 2)])
    data = Labelled(seqs, torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.ones(4, dtype=torch.bool))
    with pytest.raises(NoTrainingPairs) as info:
        make_pairs(data, TrainConfig(), gen())
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "4 distinct" in msg and "Δx = 0.25" in msg and "at most 2 of 8" in msg
    assert "point mutants" in msg and "pair_threshold" in msg
    with pytest.raises(NoTrainingPairs):
        make_triples(data, TrainConfig(), gen())


def test_triples_follow_the_preference_rule_within_each_neighbourhood():
    data = clustered(30, seed=4)
    cfg = TrainConfig(max_neighbours=100, infeasible_cap=1.0)
    ex = make_triples(data, cfg, gen())
    d = unique_rows(data)
    seqs, f = d.sequences.tolist(), d.values.tolist()
    near = lambda a, b: sum(p != q for p, q in zip(seqs[a], seqs[b])) <= 2
    expected = {
        (tuple(seqs[x]), tuple(seqs[w]), tuple(seqs[l]))
        for x in range(len(seqs))
        for w in range(len(seqs))
        for l in range(len(seqs))
        if near(x, w) and near(x, l) and f[w] > f[x] >= f[l]
    }
    got = {
        (tuple(a), tuple(b), tuple(c))
        for a, b, c in zip(ex.inputs.tolist(), ex.targets.tolist(), ex.rejected.tolist())
    }
    assert len(expected) > 10
    assert got == expected
    assert any(a == c for a, _, c in got)  # y_l may be x itself


def test_nearest_neighbours_are_exact_with_ties_broken_by_row():
    data = clustered(50, seed=5)
    seqs = unique_rows(data).sequences
    index, mism = nearest_neighbours(seqs, k=7)
    rows = seqs.tolist()
    for i, row in enumerate(rows):
        dists = [sum(a != b for a, b in zip(row, other)) for other in rows]
        expected = sorted(range(len(rows)), key=lambda j: (dists[j], j))[:7]
        assert index[i].tolist() == expected
        assert mism[i].tolist() == [dists[j] for j in expected]


def test_only_the_k_nearest_neighbours_form_pairs():
    data = clustered(60, seed=6, parents=1)  # one tight cluster: most rows have > 3 neighbours
    ex = make_pairs(data, TrainConfig(max_neighbours=3, infeasible_cap=1.0), gen())
    seqs = unique_rows(data).sequences
    index, mism = nearest_neighbours(seqs, k=3)
    allowed = set()
    for i in range(seqs.shape[0]):
        for j, m in zip(index[i].tolist(), mism[i].tolist()):
            if j != i and m <= 2:
                allowed.add(frozenset((tuple(seqs[i].tolist()), tuple(seqs[j].tolist()))))
    got = {frozenset(p) for p in as_pairs(ex)}
    assert got <= allowed
    assert len(got) < len(brute_pairs(data, 2))


def test_split_holds_out_five_percent_capped():
    data = clustered(120, seed=7)
    ex = make_pairs(data, TrainConfig(), gen())
    assert ex.num_heldout == round(0.05 * len(ex))
    small = make_pairs(data, TrainConfig(heldout_max=3), gen())
    assert small.num_heldout == 3 and small.num_train == len(small) - 3


def test_same_generator_gives_the_same_examples_and_another_reorders_them():
    data = clustered(60, seed=8)
    a = make_pairs(data, TrainConfig(), gen(1))
    b = make_pairs(data, TrainConfig(), gen(1))
    c = make_pairs(data, TrainConfig(), gen(2))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_refinement_seeds_are_the_best_training_targets():
    data = clustered(80, seed=9)
    ex = make_pairs(data, TrainConfig(), gen())
    seeds = refinement_seeds(ex, k=5)
    train_values = ex.target_values[: ex.num_train]
    top = train_values.sort(descending=True).values[:5]
    lookup = {
        tuple(s): v for s, v in zip(ex.targets[: ex.num_train].tolist(), train_values.tolist())
    }
    assert seeds.shape == (5, L)
    assert [lookup[tuple(s)] for s in seeds.tolist()] == top.tolist()
    many = refinement_seeds(ex, k=10_000)
    assert many.shape[0] == ex.num_train  # not de-duplicated, never more than the training rows


def test_refinement_seeds_of_triples_are_chosen_sequences():
    data = clustered(40, seed=10)
    ex = make_triples(data, TrainConfig(), gen())
    seeds = refinement_seeds(ex, k=3)
    chosen = {tuple(s) for s in ex.targets[: ex.num_train].tolist()}
    assert all(tuple(s) in chosen for s in seeds.tolist())


def test_records_are_trl_standard_forms():
    data = clustered(40, seed=11)
    fmt = TextFormat("json")
    pairs = make_pairs(data, TrainConfig(), gen())
    rec = pairs.records(fmt, "train")
    assert len(rec) == pairs.num_train and len(pairs.records(fmt, "heldout")) == pairs.num_heldout
    assert set(rec[0]) == {"prompt", "completion", "reward"}
    assert rec[0]["prompt"] == fmt.prompt(pairs.inputs[0].tolist())
    assert rec[0]["completion"] == fmt.answer(pairs.targets[0].tolist())
    assert rec[0]["reward"] == pytest.approx(float(pairs.rewards[0]))
    triples = make_triples(data, TrainConfig(), gen())
    trec = triples.records(fmt, "train")
    assert set(trec[0]) == {"prompt", "chosen", "rejected"}
    assert trec[0]["rejected"] == fmt.answer(triples.rejected[0].tolist())


def test_max_examples_keeps_a_uniform_sample_of_that_many_examples():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (60, 8), generator=g)
    data = Labelled(
        x, torch.rand(60, generator=g, dtype=torch.float64), torch.ones(60, dtype=torch.bool)
    )
    for make in (make_pairs, make_triples):
        full = make(data, TrainConfig(), torch.Generator().manual_seed(1))
        capped = make(data, TrainConfig(max_examples=25), torch.Generator().manual_seed(1))
        assert len(full) > 25 and len(capped) == 25
        rows = {tuple(a + b) for a, b in zip(full.inputs.tolist(), full.targets.tolist())}
        assert all(
            tuple(a + b) in rows for a, b in zip(capped.inputs.tolist(), capped.targets.tolist())
        )
