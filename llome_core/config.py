"""Typed configs with the paper's settings as defaults (``shared/spec/algorithm.md`` §0).

The API's ``...Params`` schemas take their defaults from these dataclasses, so the paper's numbers
live here and only here.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

Objective = Literal["sft", "dpo", "marge", "reinforce"]
OBJECTIVES: tuple[str, ...] = ("sft", "dpo", "marge", "reinforce")


@dataclass(frozen=True)
class EhrlichConfig:
    """An Ehrlich function instance; the default is the paper's main one."""

    num_states: int = 32
    dim: int = 32
    num_motifs: int = 4
    motif_length: int = 4
    quantization: int | None = 4
    epistasis_factor: float = 0.0
    random_seed: int = 50494

    def __post_init__(self) -> None:
        if self.num_motifs * self.motif_length > self.dim:
            raise ValueError(
                f"num_motifs * motif_length = {self.num_motifs * self.motif_length} "
                f"exceeds dim = {self.dim}: the motifs cannot all fit"
            )
        q = self.motif_length if self.quantization is None else self.quantization
        if q < 1 or self.motif_length % q != 0:
            raise ValueError(
                f"quantization {q} must divide motif_length {self.motif_length} "
                "(otherwise the optimum is unreachable)"
            )


@dataclass(frozen=True)
class GAConfig:
    """The genetic algorithm (holo ``DiscreteEvolution``) with the paper's seeding settings."""

    num_particles: int = 1000
    mutation_prob: float = 0.005
    recombine_prob: float = 0.0882
    survival_quantile: float = 0.1
    num_steps: int = 10  # steps of GA used to make the seed data
    seed: int = 50494


@dataclass(frozen=True)
class ModelConfig:
    """The language model: a tiny GPT-NeoX built locally, or a local Hugging Face directory."""

    path: str | None = None  # a local HF causal-LM directory; None builds the tiny default
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    # "json" is the paper's `<inc> [3, 1, 5]`; "compact" (`<inc> 3 1 5`) halves every cost.
    text_format: Literal["json", "compact"] = "json"


@dataclass(frozen=True)
class TrainConfig:
    """Outer-loop training. ``None`` learning rates and batches take the objective's default
    (the paper's for a pretrained model, see :func:`llome_core.training.resolve`)."""

    learning_rate: float | None = None
    batch_size: int | None = None
    epochs: int = 1
    first_round_epochs: int | None = None  # a random-init model must learn the format in round 1
    # Least optimizer steps of a tiny model's round 1 (None: training.TINY_FIRST_ROUND_MIN_STEPS,
    # enough for greedy outputs to parse). Free decoding samples need more: at T = 1 they parsed
    # 2% after 80 steps and 78% after 240 on the paper instance's seed data.
    first_round_min_steps: int | None = None
    pair_threshold: float = 0.25  # Δx, normalized Hamming distance
    max_neighbours: int = 30
    infeasible_cap: float = 0.1
    heldout_fraction: float = 0.05
    heldout_max: int = 100
    dpo_beta: float = 0.4
    dpo_warmup_steps: int = 150
    marge_alpha: float = 1.0
    marge_beta: float = 10.0
    reinforce_weighted: bool = False  # the paper's prose (self-normalized weights) vs its code
    allow_batch_of_one: bool = False  # only to reproduce the authors' degenerate MargE
    # 0: train on last round's labels only (the paper); 1: on everything so far. None: by the
    # batch size, see :func:`default_replay_fraction` (LoopConfig resolves it).
    replay_fraction: float | None = None
    # [ours] a uniform sample of at most this many pairs/triples per round (None: all, the paper).
    # Triples grow with the square of a neighbourhood: 500 sequences can give 10^4 and more.
    max_examples: int | None = None
    # When no checkpoint of a round passes the format check: "final" keeps the last weights (the
    # authors' trainers do), "start" goes back to the weights the round started from.
    checkpoint_fallback: Literal["final", "start"] = "final"


@dataclass(frozen=True)
class GenerateConfig:
    """Inner-loop iterative refinement and the filter.

    ``num_seeds`` and ``samples_per_step`` left None follow the oracle budget (LoopConfig resolves
    them with :func:`refinement_budget`): the paper's 200 seeds x 10 steps x (greedy + 6 x 10
    samples) at N = 2000 calls per round, about 61 outputs per oracle call below it, never more
    than the paper's volume, with a floor of :data:`MIN_REFINEMENT_SEEDS` seeds.
    """

    num_seeds: int | None = None
    num_steps: int = 10
    samples_per_step: int | None = None
    temperatures: tuple[float, ...] = (0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
    greedy: bool = True
    max_new_tokens: int = 512
    likelihood_quantile: float = 0.6  # the filter keeps outputs at or above this quantile
    batch_size: int = 256  # prompts decoded together
    # "constrained": a KV-cached walk that can only emit well-formed sequences (ours);
    # "free": sample freely, parse, drop failures and count them by reason (the paper's).
    decoding: Literal["constrained", "free"] = "constrained"
    # "bf16": decode with a bfloat16 copy of the model (training stays fp32). Its matmuls run
    # natively on CPUs with AVX512-BF16 or AMX and on GPUs; the samples follow the copy's logits,
    # so they differ from fp32's where two states nearly tie (see llome_core.decoding).
    precision: Literal["fp32", "bf16"] = "fp32"


_SCHEDULE = re.compile(r"^(sft|dpo|marge|reinforce)(\d+)$")


def parse_schedule(objective: str, rounds: int) -> list[str]:
    """Per-round objectives. ``marge`` means SFT in round 1 then MargE (round 1 is always SFT);
    ``sft1-marge9`` is i rounds of one objective then j of the next, padded with the last."""
    objective = objective.lower().strip()
    if objective in OBJECTIVES:
        return ["sft"] + [objective] * (rounds - 1) if rounds > 0 else []
    stages: list[str] = []
    for part in objective.split("-"):
        m = _SCHEDULE.match(part)
        if not m:
            raise ValueError(
                f"objective {objective!r} is not one of {OBJECTIVES} nor a schedule like 'sft1-marge9'"
            )
        stages += [m.group(1)] * int(m.group(2))
    if not stages or stages[0] != "sft":
        raise ValueError("a schedule must start with SFT rounds (round 1 is always SFT)")
    stages += [stages[-1]] * max(0, rounds - len(stages))
    return stages[:rounds]


# Below this many oracle calls per round a campaign trains on every label so far (spec §3.1
# [ours]): one small wet-lab batch rarely yields pairs within the distance threshold.
SMALL_BATCH = 500
PAPER_BATCH = 2000  # N of the paper's main experiment
PAPER_SEEDS = 200
PAPER_SAMPLES = 10
PAPER_TEMPERATURES = 6
# Fewest refinement seeds at any budget: at N = 8 this gives 8 seeds x 10 steps x 7 outputs = 560
# outputs (70 per call), hundreds of distinct ones for the filter to choose 8 from.
MIN_REFINEMENT_SEEDS = 8


def default_replay_fraction(batch_size: int) -> float:
    """1 (train on everything labelled so far) below :data:`SMALL_BATCH` calls per round, else 0
    (the paper: the last round's labels only)."""
    return 1.0 if batch_size < SMALL_BATCH else 0.0


def refinement_budget(batch_size: int, num_steps: int = 10, greedy: bool = True) -> tuple[int, int]:
    """(num_seeds, samples_per_step) for ``batch_size`` oracle calls per round.

    The paper decodes 200 seeds x 10 steps x (1 greedy + 6 x 10 samples) = 122,000 outputs for
    N = 2000, i.e. 61 per oracle call. Below N = 2000 samples scale with the square root of
    N / 2000 (at least 1) and seeds make up the rest of 61 outputs per call, at least
    :data:`MIN_REFINEMENT_SEEDS`; at and above 2000 it is the paper's 200 and 10.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ratio = min(1.0, batch_size / PAPER_BATCH)
    samples = max(1, round(PAPER_SAMPLES * math.sqrt(ratio)))
    paper_outputs = PAPER_SEEDS * 10 * (1 + PAPER_TEMPERATURES * PAPER_SAMPLES)
    per_seed = num_steps * (int(greedy) + PAPER_TEMPERATURES * samples)
    seeds = round(paper_outputs * ratio / per_seed)
    return min(PAPER_SEEDS, max(MIN_REFINEMENT_SEEDS, seeds)), samples


@dataclass(frozen=True)
class LoopConfig:
    """A whole LLOME run. Fields left None in ``train`` and ``generate`` are resolved from
    ``batch_size`` here: ``replay_fraction`` by :func:`default_replay_fraction`, ``num_seeds``
    and ``samples_per_step`` by :func:`refinement_budget`; the resolved values are what
    ``to_dict()`` stores."""

    objective: str = "sft1-marge9"
    rounds: int = 10
    batch_size: int = 2000  # N: oracle calls per round
    seed: int = 0
    device: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        parse_schedule(self.objective, self.rounds)  # fails early with a clear message
        if self.train.replay_fraction is None:
            train = replace(self.train, replay_fraction=default_replay_fraction(self.batch_size))
            object.__setattr__(self, "train", train)
        g = self.generate
        if g.num_seeds is None or g.samples_per_step is None:
            seeds, samples = refinement_budget(self.batch_size, g.num_steps, g.greedy)
            g = replace(
                g,
                num_seeds=seeds if g.num_seeds is None else g.num_seeds,
                samples_per_step=samples if g.samples_per_step is None else g.samples_per_step,
            )
            object.__setattr__(self, "generate", g)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopConfig:
        sub = {"model": ModelConfig, "train": TrainConfig, "generate": GenerateConfig}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            if f.name in sub:
                v = sub[f.name](**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})
            kwargs[f.name] = v
        return cls(**kwargs)
