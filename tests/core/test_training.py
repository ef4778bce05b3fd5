"""One training round per objective on a tiny random-init model, on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from llome_core.config import ModelConfig, TrainConfig
from llome_core.datasets import NoTrainingPairs
from llome_core.modeling import build_model, build_tokenizer
from llome_core.optimizer import Labelled
from llome_core.progress import Cancelled
from llome_core.text import TextFormat
from llome_core.training import (
    PRETRAINED_DEFAULTS,
    TINY_FIRST_ROUND_MAX_EPOCHS,
    TINY_FIRST_ROUND_MIN_STEPS,
    resolve,
    train_round,
)

V, L = 8, 8
FMT = TextFormat("json")
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2)


def labelled(n: int = 80, seed: int = 0) -> Labelled:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, V, (4, L), generator=g)
    seqs = base[torch.randint(0, 4, (n,), generator=g)]
    seqs = torch.where(
        torch.rand(n, L, generator=g) < 0.15, torch.randint(0, V, (n, L), generator=g), seqs
    )
    return Labelled(seqs, torch.rand(n, generator=g).double(), torch.rand(n, generator=g) > 0.2)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(V)


@pytest.fixture(scope="module")
def data():
    return labelled()


def run(objective, tokenizer, data, tmp_path, *, round_index=1, seed=0, config=None, reporter=None):
    model = build_model(TINY, tokenizer, seed=7)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    result = train_round(
        model,
        tokenizer,
        FMT,
        data,
        objective=objective,
        config=config or TrainConfig(batch_size=16),
        round_index=round_index,
        seed=seed,
        output_dir=tmp_path,
        device="cpu",
        reporter=reporter,
        is_tiny_model=True,
    )
    return before, result


@pytest.mark.parametrize("objective", ["sft", "dpo", "marge", "reinforce"])
def test_a_round_gives_finite_losses_and_changes_every_parameter(
    objective, tokenizer, data, tmp_path
):
    steps = []
    if objective == "dpo":  # triples outnumber pairs ~4:1; fewer sequences keep the test short
        data = labelled(n=40)
    before, result = run(objective, tokenizer, data, tmp_path, reporter=lambda *a: steps.append(a))
    m = result.metrics
    assert math.isfinite(m["train_loss"]) and math.isfinite(m["eval_loss"])
    unchanged = [k for k, p in result.model.named_parameters() if torch.equal(p, before[k])]
    assert unchanged == []
    assert m["num_train"] + m["num_heldout"] == m["num_examples"] > 0
    assert m["epochs"] == 1 and m["steps"] == math.ceil(m["num_train"] / 16)
    assert steps[0] == ("train", 0, m["steps"]) and steps[-1] == ("train", m["steps"], m["steps"])
    assert result.seeds.shape == (min(200, m["num_train"]), L)
    assert "forward" not in result.model.__dict__  # trl's fused-head patch is removed
    assert m["format_gate"] is False  # only with num_states
    assert m["checkpoint_fallback"] is None  # no gate, nothing to fall back from


def test_the_same_seed_gives_identical_weights_and_another_does_not(tokenizer, tmp_path):
    data = labelled(n=40)
    _, a = run("marge", tokenizer, data, tmp_path / "a", seed=5)
    _, b = run("marge", tokenizer, data, tmp_path / "b", seed=5)
    _, c = run("marge", tokenizer, data, tmp_path / "c", seed=6)
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(a.seeds, b.seeds)


def test_the_kept_checkpoint_has_the_lowest_held_out_loss(tokenizer, data, tmp_path):
    config = TrainConfig(batch_size=16, first_round_epochs=2)
    _, result = run("sft", tokenizer, data, tmp_path, round_index=0, config=config)
    history = result.metrics["eval_history"]
    assert result.metrics["epochs"] == 2
    assert len(history) == min(10, result.metrics["steps"])  # every 10% of the round
    assert result.metrics["eval_loss"] == min(loss for _, loss in history)
    step = result.metrics["selected_step"]
    assert (step, result.metrics["eval_loss"]) in history


def test_a_cancelled_reporter_stops_training(tokenizer, data, tmp_path):
    def reporter(phase, step, total):
        if step >= 2:
            raise Cancelled("paused")

    model = build_model(TINY, tokenizer, seed=7)
    with pytest.raises(Cancelled):
        train_round(
            model,
            tokenizer,
            FMT,
            data,
            objective="sft",
            config=TrainConfig(batch_size=16),
            round_index=1,
            seed=0,
            output_dir=tmp_path,
            reporter=reporter,
        )
    assert "forward" not in model.__dict__


def test_no_pairs_reaches_the_caller_in_plain_words(tokenizer, tmp_path):
    far = Labelled(
        torch.tensor([[i] * L for i in range(4)]),
        torch.tensor([0.1, 0.2, 0.3, 0.4]),
        torch.ones(4, dtype=torch.bool),
    )
    model = build_model(TINY, tokenizer, seed=7)
    with pytest.raises(NoTrainingPairs, match="point mutants"):
        train_round(
            model,
            tokenizer,
            FMT,
            far,
            objective="marge",
            config=TrainConfig(),
            round_index=1,
            seed=0,
            output_dir=tmp_path,
        )


def test_resolve_gives_the_paper_settings_for_a_pretrained_model_and_config_wins():
    for objective, (optim, lr, batch) in PRETRAINED_DEFAULTS.items():
        r = resolve(TrainConfig(), objective, is_tiny_model=False)
        assert (r.optimizer, r.learning_rate, r.batch_size, r.epochs, r.first_round_epochs) == (
            optim,
            lr,
            batch,
            1,
            1,
        )
    assert resolve(TrainConfig(), "dpo", False).optimizer == "rmsprop"
    assert resolve(TrainConfig(), "sft", False).learning_rate == 1e-6
    tiny = resolve(TrainConfig(), "sft", is_tiny_model=True)
    assert tiny.learning_rate > 1e-5
    custom = resolve(
        TrainConfig(learning_rate=3e-4, batch_size=8, first_round_epochs=2), "marge", True
    )
    assert (custom.learning_rate, custom.batch_size, custom.first_round_epochs) == (3e-4, 8, 2)
    with pytest.raises(ValueError, match="objective"):
        resolve(TrainConfig(), "ppo", True)


def test_a_tiny_models_first_round_runs_enough_steps_to_learn_the_format():
    tiny = resolve(TrainConfig(), "sft", is_tiny_model=True)
    assert tiny.steps_for_round(1, steps_per_epoch=5) == 5  # later rounds: one epoch
    assert tiny.steps_for_round(0, steps_per_epoch=1000) == 1000  # at least one epoch
    # below the floor: the floor, even inside an epoch (sized to the data, not whole epochs)
    assert tiny.steps_for_round(0, steps_per_epoch=38) == TINY_FIRST_ROUND_MIN_STEPS
    assert tiny.steps_for_round(0, steps_per_epoch=1) == TINY_FIRST_ROUND_MAX_EPOCHS
    fixed = resolve(TrainConfig(first_round_epochs=4), "sft", is_tiny_model=True)
    assert fixed.steps_for_round(0, steps_per_epoch=3) == 12
    assert resolve(TrainConfig(), "sft", is_tiny_model=False).steps_for_round(0, 7) == 7
    longer = resolve(TrainConfig(first_round_min_steps=240), "sft", is_tiny_model=True)
    assert longer.steps_for_round(0, steps_per_epoch=48) == 240  # e.g. for free decoding
    with pytest.raises(ValueError, match="first_round_min_steps"):
        resolve(TrainConfig(first_round_min_steps=0), "sft", is_tiny_model=True)


@pytest.mark.parametrize("fallback", ["final", "start"])
def test_when_no_checkpoint_passes_the_format_gate_the_fallback_decides(
    fallback, tokenizer, data, tmp_path
):
    # A random-init model cannot write the format after one short epoch: every checkpoint fails
    # the gate. "final" keeps the weights training ended with (the authors' trainers), "start"
    # goes back to the round's starting weights; the metrics say which one applied.
    model = build_model(TINY, tokenizer, seed=7)
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    config = TrainConfig(batch_size=32, heldout_max=3, checkpoint_fallback=fallback)
    gated = train_round(
        model,
        tokenizer,
        FMT,
        data,
        objective="marge",
        config=config,
        round_index=1,
        seed=0,
        output_dir=tmp_path,
        num_states=V,
    )
    m = gated.metrics
    assert m["format_gate"] is True and m["format_gate_passed"] is False
    assert m["format_gate_history"] and all(not g["passed"] for g in m["format_gate_history"])
    assert all(g["valid"] < 0.9 for g in m["format_gate_history"])
    assert m["checkpoint_fallback"] == fallback
    unchanged = [torch.equal(p, start[k]) for k, p in gated.model.named_parameters()]
    if fallback == "start":
        assert all(unchanged) and m["selected_step"] == 0
    else:
        assert not any(unchanged) and m["selected_step"] == m["steps"] > 0
