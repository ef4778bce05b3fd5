"""What MargE and REINFORCE share: per-example fields carried to ``compute_loss``, completion
log-probabilities, the self-normalized importance weights, and a trainer base on trl's SFTTrainer.

trl's collator emits only ``input_ids``, ``labels`` and ``attention_mask``; the per-example reward
and reference log-probability ride along as dataset columns (``remove_unused_columns=False``) and
:class:`ExtraFieldsCollator` turns them into tensors beside the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from trl import SFTTrainer

# Dataset columns that reach compute_loss as float tensors of shape (batch,).
EXTRA_FIELDS: tuple[str, ...] = ("reward", "ref_logp")
# Log-ratios are clamped before the softmax so one runaway example cannot take all the weight
# (and exp cannot overflow); the spec's bound.
LOG_RATIO_CLAMP = 20.0


class ExtraFieldsCollator:
    """Wraps a trl collator and adds the :data:`EXTRA_FIELDS` present in the examples."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        for name in EXTRA_FIELDS:
            if name in examples[0]:
                batch[name] = torch.tensor([float(e[name]) for e in examples], dtype=torch.float32)
        return batch


def self_normalized_weights(
    logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float = LOG_RATIO_CLAMP
) -> torch.Tensor:
    """w̄_i = w_i / Σ_j w_j with w_i = π_θ(y_i|x_i) / π_ref(y_i|x_i) over the batch (§4).

    A softmax of the clamped full-sequence log-ratios; gradients flow through it.
    """
    return torch.softmax((logp - ref_logp.to(logp.dtype)).clamp(-clamp, clamp), dim=0)


def check_batch(size: int, allow_batch_of_one: bool) -> None:
    """Self-normalized weights over one example are identically 1: the reward never reaches the
    gradient. Refuse unless asked for (to reproduce the authors' setting)."""
    if size < 1:
        raise ValueError("empty batch")
    if size == 1 and not allow_batch_of_one:
        raise ValueError(
            "a batch of 1 makes the self-normalized weights identically 1, so the reward never "
            "reaches the gradient; use a batch of at least 2 (or set allow_batch_of_one=True to "
            "reproduce the authors' degenerate setting)"
        )


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log π(y_t | x, y_<t) over the positions whose label is not -100, and their count.

    Computed from the full logits in float32; returns ``(sum_logp (B,), num_tokens (B,))``.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp_min(0)[..., None])[..., 0]
    logp = logp.masked_fill(~mask, 0.0)
    return logp.sum(dim=1), mask.sum(dim=1)


def tokenize_pair(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` exactly as trl's SFTTrainer builds them for a prompt/completion
    record: EOS appended to the completion, prompt positions labelled -100."""
    eos = tokenizer.eos_token
    if eos is not None and not completion.endswith(eos):
        completion = completion + eos
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + completion)["input_ids"]
    n = 0
    while n < min(len(prompt_ids), len(full)) and prompt_ids[n] == full[n]:
        n += 1
    return full, [-100] * n + full[n:]


@torch.no_grad()
def sequence_logprobs(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probabilities of ``records`` (``prompt``/``completion``) under ``model``.

    Used once per round, with the starting checkpoint, for π_ref (no second resident model).
    Returns ``(sum_logp, num_tokens)`` on the CPU, float64 and long, in record order.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums, counts = [], []
    try:
        for start in range(0, len(records), batch_size):
            chunk = [
                tokenize_pair(tokenizer, r["prompt"], r["completion"])
                for r in records[start : start + batch_size]
            ]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (a, b) in enumerate(chunk):
                ids[i, : len(a)] = torch.tensor(a)
                labels[i, : len(b)] = torch.tensor(b)
                attn[i, : len(a)] = 1
            s, c = completion_logprobs(model, ids.to(device), attn.to(device), labels.to(device))
            sums.append(s.double().cpu())
            counts.append(c.cpu())
    finally:
        model.train(was_training)
    if not sums:
        return torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.long)
    return torch.cat(sums), torch.cat(counts)


class RewardTrainer(SFTTrainer):
    """SFTTrainer whose loss is a function of per-example completion log-probabilities.

    Subclasses implement :meth:`objective` only; ``compute_loss`` gathers log π_θ(y|x) (summed and
    token counts) from trl's fused LM head and the ``reward``/``ref_logp`` fields.
    """

    def __init__(self, *args: Any, allow_batch_of_one: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_batch_of_one = allow_batch_of_one
        if self.args.per_device_train_batch_size < 2:
            check_batch(self.args.per_device_train_batch_size, allow_batch_of_one)
        if not isinstance(self.data_collator, ExtraFieldsCollator):
            self.data_collator = ExtraFieldsCollator(self.data_collator)

    # Trainer only assigns an attribute of this name during a hyperparameter search (not used).
    def objective(  # type: ignore[override]
        self,
        logp: torch.Tensor,
        num_tokens: torch.Tensor,
        reward: torch.Tensor,
        ref_logp: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        reward = inputs.pop("reward")
        ref_logp = inputs.pop("ref_logp", None)
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs.get("attention_mask"),
            labels=inputs["labels"],
            fused_lm_head=True,
            use_cache=False,
        )
        logp = outputs.log_probs.sum(dim=1)
        num_tokens = outputs.label_mask.sum(dim=1)
        loss = self.objective(logp, num_tokens, reward.to(logp.dtype), ref_logp)
        with torch.no_grad():
            self._metrics[mode]["mean_logp_per_token"].append(
                (logp / num_tokens.clamp_min(1)).mean().item()
            )
            if ref_logp is not None:
                self._metrics[mode]["mean_log_ratio"].append((logp - ref_logp).mean().item())
        return (loss, outputs) if return_outputs else loss
