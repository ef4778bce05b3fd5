"""Losses against hand-computed values (spec §4), and the trainers' losses against the pure ones."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from llome_core.config import ModelConfig, TrainConfig
from llome_core.modeling import build_model, build_tokenizer
from llome_core.objectives import (
    ExtraFieldsCollator,
    marge_loss,
    reinforce_loss,
    self_normalized_weights,
    sequence_logprobs,
    tokenize_pair,
)
from llome_core.text import TextFormat
from llome_core.training import build_trainer, resolve, trainer_arguments

# A batch of two: log π_θ = [-4, -6] over [2, 3] completion tokens, log π_ref = [-5, -5],
# rewards [0.5, 0]. Log-ratios [1, -1] give w̄ = [e, 1/e] / (e + 1/e) = [0.880797, 0.119203];
# log π̄ = [-2, -2].
LOGP = [-4.0, -6.0]
REF = [-5.0, -5.0]
NTOK = [2, 3]
REWARD = [0.5, 0.0]
# α·Σ w̄ (π̄ − r) − β·mean π̄ = 0.880797·(−2.5) + 0.119203·(−2) + 20
MARGE_EXPECTED = 17.559601461011
# mean_i(−r·logp − β·π̄) = ((2 + 20) + (0 + 20)) / 2
REINFORCE_EXPECTED = 21.0
# −Σ w̄ r − β·mean π̄ = −0.880797·0.5 + 20
REINFORCE_WEIGHTED_EXPECTED = 19.559601461011


def t(values, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_self_normalized_weights_are_a_softmax_of_clamped_log_ratios():
    w = self_normalized_weights(t(LOGP), t(REF))
    assert w.tolist() == pytest.approx([0.8807970779778824, 0.11920292202211757])
    clamped = self_normalized_weights(t([30.0, -30.0]), t([0.0, 0.0]))
    assert clamped.tolist() == pytest.approx(
        [1 / (1 + math.exp(-40)), math.exp(-40) / (1 + math.exp(-40))]
    )


def test_marge_loss_matches_the_hand_computation():
    loss = marge_loss(t(LOGP), t(REF), torch.tensor(NTOK), t(REWARD), alpha=1.0, beta=10.0)
    assert loss.item() == pytest.approx(MARGE_EXPECTED, abs=1e-9)


def test_marge_gradient_flows_through_the_weights():
    logp = t(LOGP, grad=True)
    marge_loss(logp, t(REF), torch.tensor(NTOK), t(REWARD)).backward()
    w = torch.tensor([0.8807970779778824, 0.11920292202211757], dtype=torch.float64)
    a = torch.tensor([-2.5, -2.0], dtype=torch.float64)  # π̄ − r
    # d/dlogp_i of Σ_j w̄_j a_j = w̄_i (a_i − Σ_j w̄_j a_j); of w̄_i π̄_i also w̄_i / n_i; of −β π̄: −β/(B n_i)
    n = torch.tensor(NTOK, dtype=torch.float64)
    expected = w * (a - (w * a).sum()) + w / n - 10.0 / (2 * n)
    assert torch.allclose(logp.grad, expected, atol=1e-12)


def test_reward_changes_the_marge_gradient():
    def grad(reward, logp_values=LOGP, ref=REF, ntok=NTOK, allow=False):
        logp = t(logp_values, grad=True)
        marge_loss(logp, t(ref), torch.tensor(ntok), t(reward), allow_batch_of_one=allow).backward()
        return logp.grad

    assert not torch.allclose(grad([0.5, 0.0]), grad([0.0, 0.0]))
    assert not torch.allclose(grad([0.5, 0.0]), grad([0.0, 0.5]))
    # With a batch of one the weight is identically 1: the reward never reaches the gradient,
    # which is why such batches are refused unless asked for.
    one = {"logp_values": [-4.0], "ref": [-5.0], "ntok": [2], "allow": True}
    assert torch.allclose(grad([0.9], **one), grad([0.0], **one))


def test_marge_refuses_a_batch_of_one_unless_allowed():
    args = (t([-4.0]), t([-5.0]), torch.tensor([2]), t([0.5]))
    with pytest.raises(ValueError, match="batch of 1"):
        marge_loss(*args)
    assert torch.isfinite(marge_loss(*args, allow_batch_of_one=True))


def test_reinforce_loss_matches_the_hand_computation():
    loss = reinforce_loss(t(LOGP), torch.tensor(NTOK), t(REWARD), alpha=1.0, beta=10.0)
    assert loss.item() == pytest.approx(REINFORCE_EXPECTED, abs=1e-12)
    weighted = reinforce_loss(
        t(LOGP), torch.tensor(NTOK), t(REWARD), beta=10.0, weighted=True, ref_logp=t(REF)
    )
    assert weighted.item() == pytest.approx(REINFORCE_WEIGHTED_EXPECTED, abs=1e-9)
    with pytest.raises(ValueError, match="ref_logp"):
        reinforce_loss(t(LOGP), torch.tensor(NTOK), t(REWARD), weighted=True)


def test_reinforce_gradient_is_reward_weighted_likelihood():
    logp = t(LOGP, grad=True)
    reinforce_loss(logp, torch.tensor(NTOK), t(REWARD), beta=10.0).backward()
    n = torch.tensor(NTOK, dtype=torch.float64)
    expected = (-t(REWARD) - 10.0 / n) / 2
    assert torch.allclose(logp.grad, expected, atol=1e-12)


# ---- trainers on a tiny model -------------------------------------------------------------

V, L = 8, 8
FMT = TextFormat("json")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(V)


@pytest.fixture()
def model(tokenizer):
    return build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2), tokenizer, seed=3)


def pair_records(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(0, V, (n, L), generator=g).tolist()
    ys = torch.randint(0, V, (n, L), generator=g).tolist()
    return [
        {"prompt": FMT.prompt(x), "completion": FMT.answer(y), "reward": 0.1 * i}
        for i, (x, y) in enumerate(zip(xs, ys))
    ]


def args_for(objective: str, tmp_path: Path, batch: int = 4) -> dict:
    resolved = resolve(TrainConfig(batch_size=batch), objective, is_tiny_model=True)
    return trainer_arguments(
        output_dir=tmp_path,
        resolved=resolved,
        epochs=1,
        warmup_steps=0,
        seed=0,
        device="cpu",
        bf16=False,
        has_eval=True,
    )


def test_sequence_logprobs_score_completion_tokens_and_eos(model, tokenizer):
    records = pair_records(3)
    total, count = sequence_logprobs(model, tokenizer, records, batch_size=2)
    assert count.tolist() == [FMT.answer_length(L) + 1] * 3  # the answer plus EOS
    ids, labels = tokenize_pair(tokenizer, records[1]["prompt"], records[1]["completion"])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits[:-1].double(), -1)
    expected = sum(logp[i, lab].item() for i, lab in enumerate(labels[1:]) if lab != -100)
    assert total[1].item() == pytest.approx(expected, abs=1e-4)


def test_extra_fields_reach_the_batch_as_tensors():
    def inner(examples):
        return {"input_ids": torch.tensor([e["input_ids"] for e in examples])}

    batch = ExtraFieldsCollator(inner)(
        [
            {"input_ids": [1, 2], "reward": 0.5, "ref_logp": -3.0},
            {"input_ids": [3, 4], "reward": 0.0, "ref_logp": -1.0},
        ]
    )
    assert batch["reward"].tolist() == [0.5, 0.0]
    assert batch["ref_logp"].tolist() == [-3.0, -1.0]


@pytest.mark.parametrize("objective", ["marge", "reinforce"])
def test_trainer_loss_equals_the_pure_loss_on_a_batch(objective, model, tokenizer, tmp_path):
    records = pair_records(4)
    logp, ntok = sequence_logprobs(model, tokenizer, records)
    ref = logp + torch.tensor([0.3, -0.2, 0.5, 0.0], dtype=torch.float64)  # a non-uniform w̄
    for r, lp in zip(records, ref.tolist()):
        r["ref_logp"] = lp
    ds = Dataset.from_list(records)
    cfg = TrainConfig(batch_size=4, reinforce_weighted=False)
    trainer = build_trainer(
        objective, model, tokenizer, cfg, args_for(objective, tmp_path), ds, ds, []
    )
    batch = next(iter(trainer.get_eval_dataloader()))  # sequential: record order
    assert batch["reward"].tolist() == pytest.approx([r["reward"] for r in records])
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, dict(batch)).item()
    reward = torch.tensor([r["reward"] for r in records], dtype=torch.float64)
    if objective == "marge":
        expected = marge_loss(logp, ref, ntok, reward, alpha=1.0, beta=10.0)
    else:
        expected = reinforce_loss(logp, ntok, reward, alpha=1.0, beta=10.0)
    assert got == pytest.approx(expected.item(), rel=1e-4)


def test_marge_trainer_refuses_a_configured_batch_of_one(model, tokenizer, tmp_path):
    records = pair_records(2)
    for r in records:
        r["ref_logp"] = -20.0
    ds = Dataset.from_list(records)
    with pytest.raises(ValueError, match="batch of 1"):
        build_trainer(
            "marge",
            model,
            tokenizer,
            TrainConfig(batch_size=1),
            args_for("marge", tmp_path, 1),
            ds,
            None,
            [],
        )
    build_trainer(
        "marge",
        model,
        tokenizer,
        TrainConfig(batch_size=1, allow_batch_of_one=True),
        args_for("marge", tmp_path, 1),
        ds,
        None,
        [],
    )


def test_dpo_loss_through_trl_matches_the_hand_computation(model, tokenizer, tmp_path):
    g = torch.Generator().manual_seed(1)
    seqs = torch.randint(0, V, (3, 3, L), generator=g).tolist()
    triples = [
        {"prompt": FMT.prompt(x), "chosen": FMT.answer(w), "rejected": FMT.answer(l)}
        for x, w, l in seqs
    ]
    ds = Dataset.from_list(triples)
    reference = copy.deepcopy(model)
    cfg = TrainConfig(batch_size=3)
    trainer = build_trainer("dpo", model, tokenizer, cfg, args_for("dpo", tmp_path, 3), ds, ds, [])
    with torch.no_grad():  # move the policy away from its frozen reference copy
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    batch = next(iter(trainer.get_eval_dataloader()))
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, dict(batch)).item()

    def score(m, key):
        recs = [{"prompt": r["prompt"], "completion": r[key]} for r in triples]
        return sequence_logprobs(m, tokenizer, recs)[0]

    margin = (score(model, "chosen") - score(reference, "chosen")) - (
        score(model, "rejected") - score(reference, "rejected")
    )
    expected = -torch.nn.functional.logsigmoid(0.4 * margin).mean().item()
    assert abs(margin).max() > 0.1  # the check is not the trivial log 2
    assert got == pytest.approx(expected, rel=1e-4)
