"""The LLOME loop end to end on a small Ehrlich function: every objective, and stop/resume."""

from __future__ import annotations

import json

import pytest
import torch

from llome_core.config import GAConfig, GenerateConfig, LoopConfig, ModelConfig, TrainConfig
from llome_core.ehrlich import Ehrlich
from llome_core.ga import run_ga
from llome_core.loop import LlomeLoop, LoopStateError
from llome_core.optimizer import Labelled

DIM, STATES = 8, 8


@pytest.fixture(scope="module")
def ehrlich() -> Ehrlich:
    return Ehrlich(num_states=STATES, dim=DIM, num_motifs=2, motif_length=2, random_seed=3)


@pytest.fixture(scope="module")
def seed_data(ehrlich: Ehrlich) -> Labelled:
    ga = GAConfig(num_particles=100, mutation_prob=0.05, survival_quantile=0.2, num_steps=3, seed=1)
    return run_ga(ehrlich, ga).dataset


def small_config(objective: str, rounds: int = 2, seed: int = 0) -> LoopConfig:
    return LoopConfig(
        objective=objective,
        rounds=rounds,
        batch_size=12,
        seed=seed,
        model=ModelConfig(hidden_size=32, num_layers=2, num_heads=2),
        train=TrainConfig(first_round_epochs=2, batch_size=16, replay_fraction=1.0),
        generate=GenerateConfig(num_seeds=6, num_steps=2, samples_per_step=2, batch_size=128),
    )


def label(ehrlich: Ehrlich, x: torch.Tensor) -> Labelled:
    values, feasible = ehrlich.evaluate(x)
    return Labelled(x, values, feasible)


@pytest.mark.parametrize("objective", ["sft", "dpo", "marge", "reinforce", "sft1-marge1"])
def test_two_outer_rounds_of_every_objective_propose_new_valid_sequences(
    objective, ehrlich, seed_data, tmp_path
):
    loop = LlomeLoop(
        small_config(objective),
        num_states=STATES,
        dim=DIM,
        workdir=tmp_path,
        feasible=ehrlich.is_feasible,
    )
    loop.tell(seed_data)
    seen = {tuple(r) for r in seed_data.sequences.tolist()}
    for r in range(2):
        proposal = loop.ask()
        x = proposal.sequences
        assert 0 < len(proposal.candidates) <= 12
        assert x.shape[1] == DIM and int(x.min()) >= 0 and int(x.max()) < STATES
        rows = {tuple(s) for s in x.tolist()}
        assert len(rows) == len(x), "a batch never repeats a sequence"
        assert not rows & seen, "a batch never re-proposes a labelled sequence"
        seen |= rows
        loop.tell(label(ehrlich, x))
    assert loop.done
    trained = [h["objective"] for h in loop.history if h["step"] == "train"]
    assert trained == ["sft", {"sft1-marge1": "marge"}.get(objective, objective)]
    with pytest.raises(LoopStateError):
        loop.train()


def test_a_run_stopped_after_any_step_resumes_bit_for_bit(ehrlich, seed_data, tmp_path):
    def run(stop_after: int | None) -> list[list[int]]:
        workdir = tmp_path / f"run-{stop_after}"
        loop = LlomeLoop(small_config("sft1-marge1"), num_states=STATES, dim=DIM, workdir=workdir)
        loop.tell(seed_data)
        batches, steps = [], 0
        while not loop.done:
            for step in ("train", "generate", "observe"):
                if step == "train":
                    loop.train()
                elif step == "generate":
                    batch = loop.generate().sequences
                    batches.append(batch.tolist())
                else:
                    loop.tell(label(ehrlich, batch))
                steps += 1
                if steps == stop_after:
                    # A new process: only the JSON state and the files in workdir survive.
                    state = json.loads(json.dumps(loop.state()))
                    loop = LlomeLoop.from_state(state, workdir)
        return batches

    uninterrupted = run(None)
    assert run(1) == uninterrupted  # stopped after training round 1
    assert run(2) == uninterrupted  # stopped after proposing batch 1, before its labels


def test_ask_filters_and_composes_the_batch_and_drops_what_composition_removed(
    ehrlich, seed_data, tmp_path
):
    loop = LlomeLoop(small_config("sft", rounds=1), num_states=STATES, dim=DIM, workdir=tmp_path)
    loop.tell(seed_data)
    loop.train()
    trained = json.loads(json.dumps(loop.state()))
    plain = LlomeLoop.from_state(trained, tmp_path).ask()
    assert plain.metrics["composition"] == {"min_hamming": 0, "excluded": 0, "too_close": 0}
    banned = [c.sequence for c in plain.candidates[:2]]

    composed = LlomeLoop.from_state(trained, tmp_path)
    proposal = composed.ask(exclude=banned, min_hamming=2)
    rows = [c.sequence for c in proposal.candidates]
    assert rows and not set(rows) & set(banned)
    labelled = [tuple(r) for r in seed_data.sequences.tolist()]
    for i, a in enumerate(rows):
        assert all(sum(x != y for x, y in zip(a, b)) >= 2 for b in rows[i + 1 :] + labelled)
    info = proposal.metrics["composition"]
    assert info["min_hamming"] == 2 and info["too_close"] >= 0
    # what composition removed is never proposed again; the kept ones wait for their labels
    known = composed.known()
    assert set(rows) <= known and set(labelled) <= known
    assert len(composed.state()["excluded"]) == info["too_close"] + info["excluded"]
    removed = info["too_close"] + info["excluded"]
    assert proposal.metrics["dropped"] == ({"composition": removed} if removed else {})


def test_the_batch_edit_distance_is_the_normalized_distance_to_each_candidates_parent(
    seed_data, tmp_path
):
    loop = LlomeLoop(small_config("sft", rounds=1), num_states=STATES, dim=DIM, workdir=tmp_path)
    loop.tell(seed_data)
    proposal = loop.ask()
    pairs = [(c.sequence, c.parent) for c in proposal.candidates]
    expected = sum(sum(a != b for a, b in zip(s, p)) / DIM for s, p in pairs) / len(pairs)
    assert proposal.metrics["mean_edit_distance"] == pytest.approx(expected)
    assert 0.0 <= proposal.metrics["refinement_mean_edit_distance"] <= 1.0


def test_a_dropped_sequence_is_known_and_no_longer_waits_for_a_label(seed_data, tmp_path):
    loop = LlomeLoop(small_config("sft", rounds=1), num_states=STATES, dim=DIM, workdir=tmp_path)
    loop.tell(seed_data)
    unseen = torch.full((1, DIM), STATES - 1)
    loop.drop(unseen, "withdrawn")
    loop.drop(unseen, "withdrawn")  # twice: counted once
    assert tuple(unseen[0].tolist()) in loop.known()
    proposal = loop.ask()
    assert proposal.metrics["dropped"] == {"withdrawn": 1}
    first = torch.tensor([proposal.candidates[0].sequence])
    loop.drop(first, "withdrawn")
    state = loop.state()
    assert list(proposal.candidates[0].sequence) not in state["pending"]
    assert list(proposal.candidates[0].sequence) in state["excluded"]


def test_free_decoding_runs_the_round_with_the_papers_sampler(ehrlich, seed_data, tmp_path):
    base = small_config("sft", rounds=1)
    config = LoopConfig.from_dict(
        {**base.to_dict(), "generate": {**base.to_dict()["generate"], "decoding": "free"}}
    )
    loop = LlomeLoop(config, num_states=STATES, dim=DIM, workdir=tmp_path)
    loop.tell(seed_data)
    proposal = loop.ask()
    assert (
        proposal.metrics["constrained"] == 0.0 and 0.0 <= proposal.metrics["parse_fail_frac"] <= 1
    )
    x = proposal.sequences
    if len(x):  # free sampling keeps only outputs that parse to a sequence of the right shape
        assert x.shape[1] == DIM and int(x.min()) >= 0 and int(x.max()) < STATES


def test_from_state_resumes_either_optimizer_by_its_kind(seed_data, tmp_path):
    from llome_core.ga import GeneticOptimizer
    from llome_core.resume import from_state

    loop = LlomeLoop(small_config("sft"), num_states=STATES, dim=DIM, workdir=tmp_path)
    loop.tell(seed_data)
    again = from_state(json.loads(json.dumps(loop.state())), workdir=tmp_path, device="cpu")
    assert isinstance(again, LlomeLoop) and again.state() == loop.state()
    assert again.known() == loop.known()
    with pytest.raises(ValueError, match="workdir"):
        from_state(loop.state())
    ga = GeneticOptimizer(
        GAConfig(num_particles=20, survival_quantile=0.2), STATES, DIM, seed_data.sequences[:2]
    )
    assert isinstance(from_state(ga.state()), GeneticOptimizer)
