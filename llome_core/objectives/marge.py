"""MargE (``shared/spec/algorithm.md`` §4): the loss as a pure function and its trl trainer.

loss = α·Σ_i w̄_i·(log π̄_θ(y_i|x_i) − r_i) − β·mean_i log π̄_θ(y_i|x_i), with w̄ the
self-normalized importance weights π_θ/π_ref over the batch (gradients flow through them) and
π̄ the length-normalized likelihood. The first term is a self-normalized expectation, so it is a
weighted sum, not divided again by the batch size.
"""

from __future__ import annotations

from typing import Any

import torch

from llome_core.objectives.base import RewardTrainer, check_batch, self_normalized_weights


def marge_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    num_tokens: torch.Tensor,
    reward: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 10.0,
    allow_batch_of_one: bool = False,
) -> torch.Tensor:
    """MargE loss of one batch from summed completion log-probabilities ``logp`` (B,) under π_θ,
    ``ref_logp`` (B,) under π_ref, completion lengths ``num_tokens`` and rewards ``reward``."""
    check_batch(logp.numel(), allow_batch_of_one)
    w = self_normalized_weights(logp, ref_logp)
    logp_bar = logp / num_tokens.to(logp.dtype).clamp_min(1)
    reward = reward.to(logp.dtype)
    return alpha * (w * (logp_bar - reward)).sum() - beta * logp_bar.mean()


class MargETrainer(RewardTrainer):
    """trl SFTTrainer with the MargE loss; the dataset carries ``reward`` and ``ref_logp`` columns
    (the reference log-probabilities computed once per round with the starting checkpoint)."""

    def __init__(self, *args: Any, alpha: float = 1.0, beta: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.beta = beta

    def objective(self, logp, num_tokens, reward, ref_logp):
        if ref_logp is None:
            raise ValueError("MargE needs a 'ref_logp' column (reference log-probabilities)")
        # A configured batch of 1 was refused at construction; a remainder batch of 1 at the end
        # of the epoch is allowed (its weight is 1, as for any single example).
        loss = marge_loss(
            logp,
            ref_logp,
            num_tokens,
            reward,
            alpha=self.alpha,
            beta=self.beta,
            allow_batch_of_one=True,
        )
        with torch.no_grad():
            w = self_normalized_weights(logp, ref_logp)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["weighted_reward"].append((w * reward).sum().item())
            self._metrics[mode]["max_weight"].append(w.max().item())
        return loss
