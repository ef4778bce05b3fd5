"""KL-regularized REINFORCE (``shared/spec/algorithm.md`` §4) as a pure loss and a trl trainer.

Default (the authors' code): per example −α·r·log π_θ(y|x) − β·log π̄_θ(y|x), averaged over the
batch (full-sequence log-probability, no importance weight, no baseline). ``weighted=True`` (the
paper's prose): −α·Σ_i w̄_i·r_i − β·mean_i log π̄_θ(y_i|x_i) with MargE's self-normalized weights,
i.e. an importance-sampled estimate of E_{π_θ}[r] whose gradient flows through w̄.
"""

from __future__ import annotations

from typing import Any

import torch

from llome_core.objectives.base import RewardTrainer, check_batch, self_normalized_weights


def reinforce_loss(
    logp: torch.Tensor,
    num_tokens: torch.Tensor,
    reward: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 10.0,
    weighted: bool = False,
    ref_logp: torch.Tensor | None = None,
    allow_batch_of_one: bool = False,
) -> torch.Tensor:
    """REINFORCE loss of one batch (see the module docstring for the two forms)."""
    logp_bar = logp / num_tokens.to(logp.dtype).clamp_min(1)
    reward = reward.to(logp.dtype)
    if not weighted:
        return (-alpha * reward * logp - beta * logp_bar).mean()
    if ref_logp is None:
        raise ValueError("weighted REINFORCE needs ref_logp (reference log-probabilities)")
    check_batch(logp.numel(), allow_batch_of_one)
    w = self_normalized_weights(logp, ref_logp)
    return -alpha * (w * reward).sum() - beta * logp_bar.mean()


class ReinforceTrainer(RewardTrainer):
    """trl SFTTrainer with the REINFORCE loss; ``reward`` (and, when weighted, ``ref_logp``)
    columns ride along with the prompt/completion records."""

    def __init__(
        self,
        *args: Any,
        alpha: float = 1.0,
        beta: float = 10.0,
        weighted: bool = False,
        allow_batch_of_one: bool = False,
        **kwargs: Any,
    ) -> None:
        # Only the weighted form normalizes over the batch; the code's form is fine with batch 1.
        super().__init__(*args, allow_batch_of_one=allow_batch_of_one or not weighted, **kwargs)
        self.alpha = alpha
        self.beta = beta
        self.weighted = weighted

    def objective(self, logp, num_tokens, reward, ref_logp):
        return reinforce_loss(
            logp,
            num_tokens,
            reward,
            alpha=self.alpha,
            beta=self.beta,
            weighted=self.weighted,
            ref_logp=ref_logp,
            allow_batch_of_one=True,
        )
