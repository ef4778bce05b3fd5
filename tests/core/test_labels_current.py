"""A label told for a sequence that already has one replaces it (latest wins): the loop and the
GA train and select on each sequence's current label, keep it across ``state()``, and old states
that hold a sequence twice load with its latest label."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from llome_core import training
from llome_core.config import GAConfig, GenerateConfig, LoopConfig, ModelConfig, TrainConfig
from llome_core.ga import GeneticOptimizer, run_ga
from llome_core.loop import LlomeLoop
from llome_core.optimizer import Labelled

DIM, STATES = 6, 5


def labelled(rows: list[list[int]], values: list[float], feasible: list[bool] | None = None):
    ok = [True] * len(rows) if feasible is None else feasible
    return Labelled(torch.tensor(rows), torch.tensor(values, dtype=torch.float64), torch.tensor(ok))


def as_dict(data: Labelled) -> dict[tuple[int, ...], tuple[float, bool]]:
    out = {}
    for row, v, f in zip(data.sequences.tolist(), data.values.tolist(), data.feasible.tolist()):
        assert tuple(row) not in out, f"{row} appears twice"
        out[tuple(row)] = (v, f)
    return out


A, B, C, D = ([i] * DIM for i in range(4))


# ---- the rule ------------------------------------------------------------------------------


def test_merge_keeps_first_seen_order_and_takes_the_latest_label():
    old = labelled([A, B, C], [0.1, 0.2, 0.3])
    new = labelled([D, B, A, B], [0.4, 0.5, 0.6, 0.7], [True, True, False, True])
    merged, where = old.merge_positions(new)
    assert merged.sequences.tolist() == [A, B, C, D]
    assert merged.values.tolist() == [0.0, 0.7, 0.3, 0.4]  # A infeasible now: value 0
    assert merged.feasible.tolist() == [False, True, True, True]
    assert where.tolist() == [3, 1, 0, 1]
    assert old.merge(new).values.tolist() == merged.values.tolist()
    assert labelled([A, B, A], [0.1, 0.2, 0.3]).unique().values.tolist() == [0.3, 0.2]


def test_merging_labels_of_another_length_is_refused():
    with pytest.raises(ValueError, match="length 3"):
        labelled([A], [0.1]).merge(labelled([[0, 1, 2]], [0.2]))


# ---- the LLOME loop ------------------------------------------------------------------------


def small_config(rounds: int = 2, replay_fraction: float = 0.0) -> LoopConfig:
    return LoopConfig(
        objective="sft",
        rounds=rounds,
        batch_size=4,
        seed=0,
        model=ModelConfig(hidden_size=32, num_layers=2, num_heads=2),
        train=TrainConfig(first_round_epochs=1, batch_size=8, replay_fraction=replay_fraction),
        generate=GenerateConfig(num_seeds=4, num_steps=1, samples_per_step=2, batch_size=64),
    )


class TrainingSpy:
    """Stands in for ``training.train_round``: records the pool each round trains on and keeps
    the model as it is (what is trained on is the point here, not the training)."""

    def __init__(self) -> None:
        self.pools: list[Labelled] = []

    def __call__(self, model: Any, tokenizer: Any, fmt: Any, pool: Labelled, **_: Any) -> Any:
        self.pools.append(pool)
        return training.TrainResult(model=model, seeds=pool.sequences[:4], examples=None)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> TrainingSpy:
    s = TrainingSpy()
    monkeypatch.setattr(training, "train_round", s)
    return s


def seed_data() -> Labelled:
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, STATES, (24, DIM), generator=g)
    return Labelled(rows, torch.rand(24, generator=g, dtype=torch.float64), torch.ones(24).bool())


def new_loop(path: Path, **kw: Any) -> LlomeLoop:
    return LlomeLoop(small_config(**kw), num_states=STATES, dim=DIM, workdir=path)


def test_a_sequence_told_twice_is_trained_on_once_with_its_second_label(spy, tmp_path):
    data = seed_data()
    loop = new_loop(tmp_path)
    loop.tell(data)
    loop.tell(labelled([data.sequences[3].tolist()], [0.99]))
    loop.train()
    (pool,) = spy.pools
    assert len(pool) == len(data)
    assert as_dict(pool)[tuple(data.sequences[3].tolist())] == (0.99, True)
    state = loop.state()
    assert as_dict(Labelled.from_dict(state["labelled"], DIM)) == as_dict(pool)
    # The history describes each batch as it was told.
    assert [h["labelled"] for h in loop.history if h["step"] == "observe"] == [24, 1]


def test_a_later_replicate_of_an_older_sequence_is_fresh_data_for_the_next_round(spy, tmp_path):
    data = seed_data()
    loop = new_loop(tmp_path, replay_fraction=0.0)  # round 2 trains on fresh labels only
    loop.tell(data)
    loop.train()
    loop.generate()
    # The batch's labels (any new sequences will do) and a replicate of a seed sequence.
    batch = [[4] * DIM, [4, 3, 2, 1, 0, 4]]
    old = tuple(data.sequences[5].tolist())
    loop.tell(labelled([*batch, list(old)], [0.1, 0.2, 0.42]))
    resumed = LlomeLoop.from_state(json.loads(json.dumps(loop.state())), tmp_path)
    for lp in (loop, resumed):
        lp.train()
    fresh, fresh_resumed = spy.pools[1], spy.pools[2]
    assert as_dict(fresh) == as_dict(fresh_resumed)
    assert set(as_dict(fresh)) == {tuple(r) for r in batch} | {old}
    assert as_dict(fresh)[old] == (0.42, True)
    assert len(loop.labelled) == len(data) + len(batch)
    assert loop.state()["relabelled"] == []  # consumed by the training


def test_an_old_state_with_a_repeated_sequence_loads_with_its_latest_label(spy, tmp_path):
    data = seed_data()
    loop = new_loop(tmp_path)
    loop.tell(data)
    loop.train()
    loop.generate()
    state = json.loads(json.dumps(loop.state()))
    # What `tell` wrote before labels were merged: the replicate appended as a second row.
    again = tuple(data.sequences[2].tolist())
    state["labelled"] = Labelled.concat([data, labelled([list(again), A], [0.77, 0.5])]).to_dict()
    state["phase"], state["train_from"] = "train", len(data)
    state.pop("relabelled")
    resumed = LlomeLoop.from_state(state, tmp_path)
    current = as_dict(resumed.labelled)
    assert len(current) == len(data) + 1 and current[again] == (0.77, True)
    assert resumed.state()["train_from"] == len(data)
    resumed.train()
    assert set(as_dict(spy.pools[-1])) == {again, tuple(A)}
    assert as_dict(spy.pools[-1])[again] == (0.77, True)


# ---- the genetic algorithm -----------------------------------------------------------------


def ga(start: torch.Tensor) -> GeneticOptimizer:
    return GeneticOptimizer(
        GAConfig(num_particles=20, survival_quantile=0.2, seed=4), STATES, DIM, start
    )


def test_the_ga_steps_on_the_latest_label_as_if_told_only_that_one():
    data = seed_data()
    start = data.sequences[:8]
    first = Labelled(data.sequences[:8], torch.linspace(0.1, 0.8, 8), torch.ones(8).bool())
    # Corrections: the best becomes the worst and the worst the best.
    correction = labelled([start[7].tolist(), start[0].tolist()], [0.05, 0.95])
    told_twice, told_once = ga(start), ga(start)
    told_twice.tell(first)
    told_twice.tell(correction)
    told_once.tell(first.merge(correction))
    assert as_dict(told_twice.labelled()) == as_dict(first.merge(correction))
    assert told_twice.best() is not None
    best, value = told_twice.best()
    assert best.tolist() == start[0].tolist() and value == 0.95
    asked_twice, asked_once = told_twice.ask(), told_once.ask()  # each takes the same GA step
    assert asked_twice.sequences.tolist() == asked_once.sequences.tolist()
    assert torch.equal(told_twice.particles, told_once.particles)
    resumed = GeneticOptimizer.from_state(json.loads(json.dumps(told_twice.state())))
    assert as_dict(resumed.labelled()) == as_dict(first.merge(correction))


def test_a_dropped_sequence_that_gets_a_label_takes_it_and_resumes_with_it():
    start = seed_data().sequences[:2]
    opt = ga(start)
    opt.drop(start[:1], "withdrawn")
    opt.tell(labelled([start[0].tolist()], [0.6]))
    opt.drop(start[:1], "withdrawn")  # the driver repeats its drops: a label stays
    resumed = GeneticOptimizer.from_state(json.loads(json.dumps(opt.state())))
    for o in (opt, resumed):
        assert as_dict(o.labelled())[tuple(start[0].tolist())] == (0.6, True)
        assert o.state()["dropped"] == []


def test_an_old_ga_state_with_a_repeated_sequence_loads_with_its_latest_label():
    start = seed_data().sequences[:2]
    state = ga(start).state()
    state["labels"] = labelled([start[0].tolist(), start[0].tolist()], [0.2, 0.3]).to_dict()
    resumed = GeneticOptimizer.from_state(state)
    assert as_dict(resumed.labelled()) == {tuple(start[0].tolist()): (0.3, True)}


def test_run_gas_dataset_holds_each_sequences_latest_label():
    calls = {"n": 0}
    latest: dict[tuple[int, ...], float] = {}

    def noisy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        values = torch.full((x.shape[0],), float(calls["n"]))
        for row in x.tolist():
            latest[tuple(row)] = float(calls["n"])
        return values, torch.ones(x.shape[0], dtype=torch.bool)

    cfg = GAConfig(num_particles=20, mutation_prob=0.05, survival_quantile=0.2, num_steps=4, seed=0)
    result = run_ga(noisy, cfg, start=torch.zeros(1, DIM, dtype=torch.long), num_states=STATES)
    got = as_dict(result.dataset)
    assert len(got) < 4 * 20  # repeats happened
    assert got == {k: (v, True) for k, v in latest.items() if k in got}
