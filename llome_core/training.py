"""One outer-loop training round (``shared/spec/algorithm.md`` §3.1, §3.7, §4) on top of trl.

``train_round`` formats this round's labelled data (§3.3), trains one epoch from the current
checkpoint with the round's objective (SFT and DPO through trl's trainers, MargE and REINFORCE
through our SFTTrainer subclasses), evaluates the held-out loss every 10% of the round, keeps the
best state in memory (for DPO and MargE only among states whose greedy outputs pass the format
gate, when ``num_states`` is given; if none passes, ``TrainConfig.checkpoint_fallback`` decides)
and returns it with the refinement seeds.

Hyperparameters come from :func:`resolve`: the paper's for a pretrained model, measured ones for
the tiny random-init model. Training is fp32 (bf16 only for DPO of a pretrained model on CUDA),
with no checkpoint files written, no reporting, and the trainer's seed derived from
``(seed, "train", round_index)``.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from llome_core.config import OBJECTIVES, TrainConfig
from llome_core.datasets import Examples, make_examples, refinement_seeds
from llome_core.decoding import FREE_SLACK_TOKENS, decode
from llome_core.objectives import MargETrainer, ReinforceTrainer, sequence_logprobs
from llome_core.optimizer import Labelled
from llome_core.progress import Reporter
from llome_core.rng import derive_seed, generator

# The paper's settings for a pretrained 2.8B model (§4): (optimizer, learning rate, batch).
PRETRAINED_DEFAULTS: dict[str, tuple[str, float, int]] = {
    "sft": ("adamw_torch", 1e-6, 128),
    "dpo": ("rmsprop", 1e-7, 64),
    "marge": ("adamw_torch", 1e-6, 64),
    "reinforce": ("adamw_torch", 1e-6, 64),  # the authors ran REINFORCE with MargE's settings
}
# A random-init tiny model learns nothing at 1e-6 (stack-notes: SFT needs ~1e-3). Measured after
# a round-1 SFT on GA seed data (v=8, L=16, c=2, k=3, q=3, holo seed 101; 824 pairs): one epoch
# of DPO at 1e-4 broke the format (14% of greedy outputs parse); at 1e-5 the json format kept 100%
# but the compact one fell to 75% by the end of the epoch (the format gate kept step 33 of 161);
# at 3e-6 every checkpoint passed the gate with the same greedy improvement (mean margin reward
# 0.41 on held-out inputs). MargE kept 100% at 1e-5 ... 1e-3 with the most improving outputs at
# 1e-4; REINFORCE at 1e-4 kept 100%.
TINY_DEFAULTS: dict[str, tuple[str, float, int]] = {
    "sft": ("adamw_torch", 1e-3, 32),
    "dpo": ("rmsprop", 3e-6, 32),
    "marge": ("adamw_torch", 1e-4, 32),
    "reinforce": ("adamw_torch", 1e-4, 32),
}
# Round 1 of a random-init model must teach it the format (§3.8). What it needs is optimizer
# steps, not epochs. Measured 2026-12-01 (json format, lr 1e-3, batch 32, greedy unconstrained
# outputs on the held-out inputs, checked every 10 steps): on 60 point mutants of one parent
# (v=20, L=20, 1,213 pairs) and on the paper instance's GA seed data (v=32, L=32, 1,520 pairs)
# alike, 0% parsed at step 40 and 100% at every check from step 50 to 220 (on the paper instance
# 100% feasible from step 70). Parsing greedy outputs is not enough, though: on the paper
# instance the round's *sampled* proposals (T = 0.6-1.6) after 80 steps were 0.3% feasible at a
# mean edit of 0.72 from their parents, after 240 steps 37% at 0.11 (llome bench paper, SFT
# round 1, 2026-12-02); free samples at T = 1 parsed 2% after 80 steps, 78% after 240. Unless
# TrainConfig.first_round_epochs is set, round 1 of a tiny model runs one epoch or this many
# steps (TrainConfig.first_round_min_steps overrides it), whichever is more, within the cap.
TINY_FIRST_ROUND_MIN_STEPS = 240
TINY_FIRST_ROUND_MAX_EPOCHS = 20
# Fraction of the steps used to warm up DPO on a tiny model (the paper's 150 steps can exceed a
# whole tiny epoch).
TINY_DPO_WARMUP_FRACTION = 0.1
# §3.7 evaluates every 10% of an epoch, and the paper's rounds are one epoch. A longer round (a
# tiny model's round 1) is evaluated at every 10% of the round: ten evaluations per epoch cost
# about a fifth of such a round's training (76 held-out pairs, 48 steps per epoch) and only
# choose among checkpoints of one run.
EVALS_PER_ROUND = 10


@dataclass(frozen=True)
class Resolved:
    """Effective hyperparameters of one objective."""

    objective: str
    optimizer: str  # a transformers OptimizerNames value
    learning_rate: float
    batch_size: int
    epochs: int
    first_round_epochs: int | None  # None: at least first_round_min_steps steps
    first_round_min_steps: int = TINY_FIRST_ROUND_MIN_STEPS

    def steps_for_round(self, round_index: int, steps_per_epoch: int) -> int:
        """Optimizer steps of round ``round_index`` (0 = the first round) given its steps per
        epoch: whole epochs, except a tiny model's round 1, which stops at the step floor."""
        if round_index > 0:
            return self.epochs * steps_per_epoch
        if self.first_round_epochs is not None:
            return self.first_round_epochs * steps_per_epoch
        floor = min(TINY_FIRST_ROUND_MAX_EPOCHS * steps_per_epoch, self.first_round_min_steps)
        return max(self.epochs * steps_per_epoch, floor)


def resolve(config: TrainConfig, objective: str, is_tiny_model: bool) -> Resolved:
    """The objective's optimizer, learning rate, batch and epochs; ``config`` fields win when
    set."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")
    optim, lr, batch = (TINY_DEFAULTS if is_tiny_model else PRETRAINED_DEFAULTS)[objective]
    if config.learning_rate is not None:
        lr = config.learning_rate
    if config.batch_size is not None:
        batch = config.batch_size
    if batch < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    first = config.first_round_epochs
    if first is None and not is_tiny_model:
        first = config.epochs
    if first is not None and first < 1:
        raise ValueError(f"first_round_epochs must be at least 1, got {first}")
    floor = config.first_round_min_steps
    if floor is None:
        floor = TINY_FIRST_ROUND_MIN_STEPS
    if floor < 1:
        raise ValueError(f"first_round_min_steps must be at least 1, got {floor}")
    return Resolved(objective, optim, lr, batch, config.epochs, first, floor)


@dataclass
class TrainResult:
    """The selected checkpoint (in memory), the refinement seeds and the round's metrics."""

    model: Any
    seeds: torch.Tensor
    examples: Examples
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class FormatGate:
    """§3.7's check for DPO and MargE checkpoints: greedy (unconstrained) outputs on the held-out
    inputs must parse (right length, states in range) at least ``min_valid`` of the time, repeat
    their input at most ``max_identical`` of the time and, when ``feasible`` (the oracle's
    constraint) is given, be feasible at least ``min_feasible`` of the time."""

    inputs: torch.Tensor  # (n, L) held-out inputs
    num_states: int
    feasible: Callable[[torch.Tensor], torch.Tensor] | None = None
    min_valid: float = 0.9
    max_identical: float = 0.1
    min_feasible: float = 0.9

    def check(self, model: Any, tokenizer: Any, fmt: Any) -> dict[str, Any]:
        # A valid answer is as long as the target answers (+ slack for a foreign tokenizer):
        # a young model that never closes the bracket is not decoded further.
        longest = max(len(tokenizer(fmt.answer(x))["input_ids"]) for x in self.inputs.tolist())
        decoded = decode(
            model,
            tokenizer,
            fmt,
            self.inputs,
            0.0,
            num_states=self.num_states,
            generator=torch.Generator().manual_seed(0),
            batch_size=256,
            max_new_tokens=longest + FREE_SLACK_TOKENS,
            decoding="free",
        )
        valid = decoded.valid.cpu()
        outputs = decoded.outputs.cpu()[valid]
        out: dict[str, Any] = {"valid": valid.float().mean().item()}
        if outputs.shape[0]:
            out["identical"] = (outputs == self.inputs[valid]).all(dim=1).float().mean().item()
            if self.feasible is not None:
                out["feasible"] = self.feasible(outputs).float().mean().item()
        out["passed"] = bool(
            out["valid"] >= self.min_valid
            and out.get("identical", 1.0) <= self.max_identical
            and out.get("feasible", 1.0) >= self.min_feasible
        )
        return out


class _Progress(TrainerCallback):
    """Reports ``("train", step, total)``; a :class:`Cancelled` raised by the reporter stops
    training."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_train_begin(self, args, state, control, **kwargs):
        self.reporter("train", 0, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.reporter("train", state.global_step, state.max_steps)


class _BestCheckpoint(TrainerCallback):
    """Evaluates at the chosen steps and keeps the state with the lowest held-out loss (on CPU),
    among the states that pass the format gate when there is one."""

    def __init__(
        self,
        eval_steps: set[int],
        gate: Callable[[Any], dict[str, Any]] | None = None,
        keep_start: bool = False,
    ) -> None:
        self.eval_steps = eval_steps
        self.gate = gate
        self.keep_start = keep_start
        self.best_loss = math.inf
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_state: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, float]] = []
        self.gate_history: list[dict[str, Any]] = []
        self._model: torch.nn.Module | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._model = model
        if self.gate is not None and self.keep_start and model is not None:
            # checkpoint_fallback="start": if no checkpoint passes the gate, go back to here.
            self.start_state = _snapshot(model)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.eval_steps:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or not math.isfinite(loss):
            return
        self.history.append((state.global_step, float(loss)))
        target = model if model is not None else self._model
        assert target is not None
        if loss < self.best_loss and self.gate is not None:
            verdict = self.gate(target)
            self.gate_history.append({"step": state.global_step, **verdict})
            if not verdict["passed"]:
                return
        if loss < self.best_loss:
            self.best_loss = float(loss)
            self.best_step = state.global_step
            self.best_state = _snapshot(target)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _eval_steps(total_steps: int) -> set[int]:
    """Steps at every 10% of the round, the last step included."""
    return {
        max(1, math.ceil(k * total_steps / EVALS_PER_ROUND)) for k in range(1, EVALS_PER_ROUND + 1)
    }


def _unpatch(model: torch.nn.Module) -> None:
    """Drop the fused-LM-head forward trl installs on the instance, restoring the class forward
    (otherwise every round would wrap the previous round's patch)."""
    model.__dict__.pop("forward", None)


def trainer_arguments(
    *,
    output_dir: Path,
    resolved: Resolved,
    epochs: int,
    warmup_steps: int,
    seed: int,
    device: str,
    bf16: bool,
    has_eval: bool,
    max_steps: int = -1,  # -1: the epochs decide
) -> dict[str, Any]:
    """Keyword arguments shared by SFTConfig and DPOConfig for one round (fp32 unless asked,
    no checkpoint files, no reporting, linear decay, no weight decay or accumulation)."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": resolved.batch_size,
        "per_device_eval_batch_size": resolved.batch_size,
        "gradient_accumulation_steps": 1,  # the forward batch is the optimizer batch (MargE's w̄)
        "learning_rate": resolved.learning_rate,
        "optim": resolved.optimizer,
        "num_train_epochs": epochs,
        "max_steps": max_steps,  # wins over the epochs: a round may end inside one
        "lr_scheduler_type": "linear",
        "warmup_steps": warmup_steps,
        "weight_decay": 0.0,
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": False,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",  # _BestCheckpoint asks for evaluations at 10% of the epoch
        "logging_strategy": "no",
        "disable_tqdm": True,
        "seed": seed,
        "data_seed": seed,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
        "remove_unused_columns": False,  # reward / ref_logp columns must reach the collator
        "prediction_loss_only": True,
        "use_cpu": device == "cpu",
        "max_length": None,
        "do_eval": has_eval,
    }


def train_round(
    model: Any,
    tokenizer: Any,
    fmt: Any,
    labelled: Labelled,
    *,
    objective: str,
    config: TrainConfig,
    round_index: int,
    seed: int,
    output_dir: Path,
    device: str = "cpu",
    reporter: Reporter | None = None,
    is_tiny_model: bool = True,
    num_seeds: int = 200,
    num_states: int | None = None,
    feasible: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TrainResult:
    """Train one outer round and return the selected checkpoint, seeds and metrics.

    ``round_index`` counts from 0 (0 is round 1, which may train for ``first_round_epochs``; a
    tiny model's round 1 trains for at least :data:`TINY_FIRST_ROUND_MIN_STEPS` steps). Raises
    :class:`llome_core.datasets.NoTrainingPairs` when the data hold nothing to learn from and
    lets :class:`llome_core.progress.Cancelled` from ``reporter`` through.

    With ``num_states`` given, DPO and MargE rounds keep only checkpoints that pass
    :class:`FormatGate` (``feasible``, the oracle's constraint, adds its feasibility check); if
    none passes, ``format_gate_passed`` is False and ``config.checkpoint_fallback`` decides:
    ``final`` keeps the weights training ended with, ``start`` the round's starting weights. The
    metric ``checkpoint_fallback`` says which one applied (``None`` when none had to).
    """
    if round_index < 0:
        raise ValueError(f"round_index counts from 0 (the first round), got {round_index}")
    started = time.perf_counter()
    resolved = resolve(config, objective, is_tiny_model)
    # numpy (seeded by transformers) takes 32-bit seeds only.
    train_seed = derive_seed(seed, "train", round_index) % 2**32
    examples = make_examples(labelled, objective, config, generator(seed, "pairs", round_index))
    train_records = examples.records(fmt, "train")
    heldout_records = examples.records(fmt, "heldout")
    normalizes = objective == "marge" or (objective == "reinforce" and config.reinforce_weighted)
    # One example makes the batch of 1 the spec refuses (self-normalized weights ≡ 1).
    if (
        normalizes
        and examples.num_train < 2
        and resolved.batch_size > 1
        and not config.allow_batch_of_one
    ):
        raise ValueError(
            f"only {examples.num_train} training example(s): {objective} normalizes over a "
            "batch of at least 2"
        )

    model.to(device)
    needs_ref = objective == "marge" or (objective == "reinforce" and config.reinforce_weighted)
    if needs_ref:
        # π_ref = the checkpoint at the start of the round, scored once, so no second model.
        for records in (train_records, heldout_records):
            if records:
                ref, _ = sequence_logprobs(
                    model, tokenizer, records, batch_size=max(resolved.batch_size, 64)
                )
                for r, lp in zip(records, ref.tolist()):
                    r["ref_logp"] = lp

    steps_per_epoch = math.ceil(len(train_records) / resolved.batch_size)
    total_steps = resolved.steps_for_round(round_index, steps_per_epoch)
    epochs = math.ceil(total_steps / max(1, steps_per_epoch))
    warmup = 0
    if objective == "dpo":
        warmup = (
            math.ceil(TINY_DPO_WARMUP_FRACTION * total_steps)
            if is_tiny_model
            else min(config.dpo_warmup_steps, total_steps)
        )
    use_cuda = str(device).startswith("cuda")
    # §4: only DPO ran in bf16; bf16 is emulated (20x slower) on CPU.
    bf16 = use_cuda and objective == "dpo" and not is_tiny_model
    has_eval = bool(heldout_records)
    args = trainer_arguments(
        output_dir=Path(output_dir),
        resolved=resolved,
        epochs=epochs,
        max_steps=total_steps,
        warmup_steps=warmup,
        seed=train_seed,
        device=str(device),
        bf16=bf16,
        has_eval=has_eval,
    )
    gate = None
    if has_eval and num_states is not None and objective in ("dpo", "marge"):
        fg = FormatGate(examples.inputs[examples.rows("heldout")], num_states, feasible)
        gate = lambda m: fg.check(m, tokenizer, fmt)
    best = _BestCheckpoint(
        _eval_steps(total_steps) if has_eval else set(),
        gate,
        keep_start=config.checkpoint_fallback == "start",
    )
    callbacks: list[TrainerCallback] = [best]
    if reporter is not None:
        callbacks.append(_Progress(reporter))
    train_ds = Dataset.from_list(train_records)
    eval_ds = Dataset.from_list(heldout_records) if has_eval else None

    devices = [torch.cuda.current_device()] if use_cuda and torch.cuda.is_available() else []
    bars = datasets.is_progress_bar_enabled()
    # The caller shows progress through the reporter: no dataset-map bars, no printed log dicts.
    datasets.disable_progress_bars()
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated")
        try:
            trainer = build_trainer(
                objective, model, tokenizer, config, args, train_ds, eval_ds, callbacks
            )
            trainer.remove_callback(PrinterCallback)
            output = trainer.train()
        finally:
            _unpatch(model)
            if bars:
                datasets.enable_progress_bars()
    gate_passed: bool | None = None
    fallback: str | None = None  # which checkpoint_fallback applied, if one did
    if best.best_state is not None:
        model.load_state_dict(best.best_state)
        gate_passed = True if gate is not None else None
    elif gate is not None:
        gate_passed = False
        fallback = config.checkpoint_fallback
        if fallback == "start":
            assert best.start_state is not None
            model.load_state_dict(best.start_state)
        # "final": the weights training ended with stay, as in the authors' trainers.
    model.eval()

    seeds = refinement_seeds(examples, k=num_seeds)
    metrics: dict[str, Any] = {
        "objective": objective,
        "round_index": round_index,
        "num_sequences": examples.num_sequences,
        "num_candidates": examples.num_candidates,
        "num_examples": len(examples),
        "num_train": examples.num_train,
        "num_heldout": examples.num_heldout,
        "num_infeasible_inputs": int(examples.infeasible.sum()),
        "train_loss": float(output.training_loss),
        "eval_loss": best.best_loss if best.best_step is not None else None,
        # 0: the gate rejected every checkpoint and the starting weights were kept.
        "selected_step": best.best_step
        if best.best_step is not None
        else (0 if fallback == "start" else int(output.global_step)),
        "eval_history": best.history,
        "steps": int(output.global_step),
        "epochs": epochs,
        "learning_rate": resolved.learning_rate,
        "batch_size": resolved.batch_size,
        "optimizer": resolved.optimizer,
        "warmup_steps": warmup,
        "bf16": bf16,
        "format_gate": gate is not None,
        "format_gate_passed": gate_passed,
        "format_gate_history": best.gate_history,
        "checkpoint_fallback": fallback,
        "replay_fraction": config.replay_fraction,
        "seconds": time.perf_counter() - started,
    }
    return TrainResult(model=model, seeds=seeds, examples=examples, metrics=metrics)


def build_trainer(
    objective: str,
    model: Any,
    tokenizer: Any,
    config: TrainConfig,
    args: dict[str, Any],
    train_ds: Dataset,
    eval_ds: Dataset | None,
    callbacks: list[TrainerCallback],
) -> Any:
    """The trl trainer of ``objective`` (DPO gets a frozen copy of ``model`` as reference)."""
    common = {
        "train_dataset": train_ds,
        "eval_dataset": eval_ds,
        "processing_class": tokenizer,
        "callbacks": callbacks,
    }
    if objective == "dpo":
        # An explicit frozen copy: DPOTrainer cannot rebuild a reference from a config-built model.
        ref_model = copy.deepcopy(model).eval()
        ref_model.requires_grad_(False)
        dpo_args = DPOConfig(
            **args, beta=config.dpo_beta, loss_type=["sigmoid"], label_smoothing=0.0
        )
        return DPOTrainer(model=model, ref_model=ref_model, args=dpo_args, **common)
    sft_args = SFTConfig(**args)
    if objective == "sft":
        return SFTTrainer(model=model, args=sft_args, **common)
    if objective == "marge":
        return MargETrainer(
            model=model,
            args=sft_args,
            alpha=config.marge_alpha,
            beta=config.marge_beta,
            allow_batch_of_one=config.allow_batch_of_one,
            **common,
        )
    if objective == "reinforce":
        return ReinforceTrainer(
            model=model,
            args=sft_args,
            alpha=config.marge_alpha,
            beta=config.marge_beta,
            weighted=config.reinforce_weighted,
            allow_batch_of_one=config.allow_batch_of_one,
            **common,
        )
    raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")


__all__ = ["Resolved", "TrainResult", "resolve", "train_round"]
