"""Iterative refinement, the inner loop of LLOME (``shared/spec/algorithm.md`` §3.4), and the
automatic temperature schedule (§3.5).

Trajectories: for every seed, one greedy run (1 output per step) and one sampling run per
temperature (``samples_per_step`` outputs per step), ``num_steps`` steps each. The input of a step
is the highest-likelihood valid output of that trajectory so far (any earlier step, this one
included for the next), or the seed while there is none.

Every step decodes the rows of *all* trajectories together (seeds x runs x samples), in chunks of
``GenerateConfig.batch_size`` rows, with :class:`llome_core.decoding.Decoder`:
``GenerateConfig.decoding`` chooses the constrained walk (ours) or free sampling with parsing (the
paper's); only valid outputs become inputs or candidates, and failures are counted by reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llome_core.config import GenerateConfig
from llome_core.decoding import Decoded, Decoder, draw_seed, eval_mode
from llome_core.optimizer import Candidate
from llome_core.progress import Reporter, null_reporter
from llome_core.text import TextFormat

# §3.5: (previous mean distance below this) -> first temperature; six temperatures 0.2 apart.
_SCHEDULE: tuple[tuple[float, float], ...] = ((0.075, 1.2), (0.1, 1.0), (0.15, 0.8))
_DEFAULT_START = 0.6
_NUM_TEMPERATURES, _TEMPERATURE_STEP = 6, 0.2


def temperatures_for(prev_mean_distance: float | None) -> tuple[float, ...]:
    """The six sampling temperatures of the next round from the previous round's mean output-input
    normalized Hamming distance (``None``: no previous round in this training stage)."""
    start = _DEFAULT_START
    if prev_mean_distance is not None:
        for below, first in _SCHEDULE:
            if prev_mean_distance < below:
                start = first
                break
    return tuple(round(start + _TEMPERATURE_STEP * i, 6) for i in range(_NUM_TEMPERATURES))


# ------------------------------------------------------------------------------------ refinement
@dataclass
class Trace:
    """Every decoded row of a refinement, in decoding order (step-major): for metrics, calibration
    and tests. ``trajectory`` indexes ``(run, seed)`` as ``run * s + seed``; run 0 is greedy when
    greedy decoding is on; ``temperature`` 0 marks greedy rows."""

    outputs: torch.Tensor  # (N, L)
    parents: torch.Tensor  # (N, L)
    trajectory: torch.Tensor  # (N,)
    step: torch.Tensor  # (N,) 1-based
    temperature: torch.Tensor  # (N,)
    log_likelihood: torch.Tensor  # (N,)
    valid: torch.Tensor  # (N,)


@dataclass
class Refinement:
    """The pooled, de-duplicated outputs of one inner loop and how they were made.

    ``metrics``: ``num_generated`` (every decoded output, failures included), ``num_valid``,
    ``num_unique``, ``parse_fail_frac``, ``unique_frac`` (distinct valid outputs / valid outputs),
    ``mean_edit_distance`` (mean normalized Hamming distance of every valid output to its input:
    the statistic of §3.5), ``mean_log_likelihood``, ``constrained`` (1.0 or 0.0), ``seconds``,
    ``sequences_per_s`` and ``parse_fail_<reason>`` counts. ``per_step`` holds the same for each
    refinement step. ``trace`` holds every row when ``keep_trace=True``. ``cost``: the
    constrained walk's :class:`llome_core.decoding.DecodeCost` (tokens, FLOPs, seconds).
    """

    candidates: list[Candidate]
    metrics: dict[str, float] = field(default_factory=dict)
    per_step: list[dict[str, float]] = field(default_factory=list)
    trace: Trace | None = None
    cost: dict[str, float] = field(default_factory=dict)


def refine(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: TextFormat,
    seeds: torch.Tensor,
    *,
    num_states: int,
    dim: int,
    config: GenerateConfig,
    temperatures: tuple[float, ...] | list[float],
    generator: torch.Generator,
    reporter: Reporter | None = None,
    keep_trace: bool = False,
) -> Refinement:
    """Refine ``seeds`` (s, L) for ``config.num_steps`` steps (§3.4); returns pooled candidates.

    Rows of all trajectories are decoded together, ``config.batch_size`` rows per forward batch.
    Candidates are pooled run-major (greedy first, then temperatures in the given order), then by
    step, then by seed; the first occurrence of each sequence is kept.
    ``config.decoding`` picks the decoder (see :mod:`llome_core.decoding`). Reports
    ``("generate", chunks done, chunks)``.
    """
    reporter = reporter or null_reporter
    t0 = time.perf_counter()
    seeds = torch.as_tensor(seeds, dtype=torch.long)
    if seeds.ndim != 2 or seeds.shape[1] != dim:
        raise ValueError(f"seeds must be (s, {dim}), got shape {tuple(seeds.shape)}")
    if seeds.numel() and (seeds.min() < 0 or seeds.max() >= num_states):
        raise ValueError(f"seed states must lie in [0, {num_states})")
    temps = [float(t) for t in temperatures]
    if any(t <= 0 for t in temps):
        raise ValueError(f"sampling temperatures must be > 0, got {temps}")
    runs: list[float] = ([0.0] if config.greedy else []) + temps  # 0.0 marks the greedy run
    if not runs or seeds.shape[0] == 0 or config.num_steps < 1:
        raise ValueError("nothing to decode: no seeds, no steps, or greedy off and no temperatures")
    dec = Decoder(
        model,
        tokenizer,
        fmt,
        num_states=num_states,
        dim=dim,
        seed=draw_seed(generator),
        max_new_tokens=config.max_new_tokens,
        decoding=config.decoding,
        precision=config.precision,
    )
    device = dec.device

    s, k = seeds.shape[0], config.samples_per_step
    # Trajectory j = (run r, seed i), j = r * s + i, with k_r rows per step (1 for greedy).
    traj_run = torch.arange(len(runs)).repeat_interleave(s)
    traj_seed = torch.arange(s).repeat(len(runs))
    per_run = torch.tensor([1 if t == 0.0 else k for t in runs])
    row_traj = torch.arange(len(traj_run)).repeat_interleave(per_run[traj_run])
    row_temp = torch.tensor(runs, dtype=torch.float32)[traj_run[row_traj]]
    num_rows, num_traj = row_traj.shape[0], traj_run.shape[0]
    chunk = max(1, int(config.batch_size))
    chunks_per_step = (num_rows + chunk - 1) // chunk
    total = config.num_steps * chunks_per_step

    current = seeds.to(device)[traj_seed.to(device)]  # (R, L): each trajectory's next input
    best_ll = torch.full((num_traj,), float("-inf"), dtype=torch.float64, device=device)
    row_traj_d, row_temp_d = row_traj.to(device), row_temp.to(device)
    rows_d = torch.arange(num_rows, device=device)

    recs: dict[str, list[torch.Tensor]] = {n: [] for n in ("out", "parent", "ll", "valid")}
    failures: dict[str, int] = {}
    per_step: list[dict[str, float]] = []
    seen: set[tuple[int, ...]] = set()
    with eval_mode(model):
        for step in range(1, config.num_steps + 1):
            inputs = current[row_traj_d]
            parts = []
            for c in range(chunks_per_step):
                sl = slice(c * chunk, (c + 1) * chunk)
                parts.append(dec(inputs[sl], row_temp_d[sl], step, c))
                reporter("generate", (step - 1) * chunks_per_step + c + 1, total)
            d = Decoded.concat(parts)
            for reason, cnt in d.failures.items():
                failures[reason] = failures.get(reason, 0) + cnt
            for name, t in (
                ("out", d.outputs),
                ("parent", inputs),
                ("ll", d.log_likelihood),
                ("valid", d.valid),
            ):
                recs[name].append(t.cpu())
            per_step.append(_step_stats(step, d, inputs, seen))

            # Next input: the trajectory's highest-likelihood valid output so far (ties: earliest).
            masked = torch.where(d.valid, d.log_likelihood, float("-inf"))
            step_best = torch.full_like(best_ll, float("-inf")).scatter_reduce(
                0, row_traj_d, masked, "amax"
            )
            is_best = d.valid & (masked == step_best[row_traj_d])
            first_row = torch.full((num_traj,), num_rows - 1, dtype=torch.long, device=device)
            first_row = first_row.scatter_reduce(
                0, row_traj_d, torch.where(is_best, rows_d, num_rows - 1), "amin"
            )
            better = step_best > best_ll
            best_ll = torch.where(better, step_best, best_ll)
            current = torch.where(better[:, None], d.outputs[first_row], current)

    steps = config.num_steps
    trace = Trace(
        outputs=torch.cat(recs["out"]),
        parents=torch.cat(recs["parent"]),
        trajectory=row_traj.repeat(steps),
        step=torch.arange(1, steps + 1).repeat_interleave(num_rows),
        temperature=row_temp.repeat(steps),
        log_likelihood=torch.cat(recs["ll"]),
        valid=torch.cat(recs["valid"]),
    )
    refinement = _pool(trace, seeds, traj_seed, traj_run, runs)
    seconds = time.perf_counter() - t0
    n_gen = num_rows * steps
    m = refinement.metrics
    m.update(
        num_generated=float(n_gen),
        parse_fail_frac=(n_gen - m["num_valid"]) / n_gen,
        constrained=1.0 if dec.constrained else 0.0,
        seconds=seconds,
        sequences_per_s=n_gen / seconds if seconds > 0 else float("inf"),
    )
    for reason, cnt in sorted(failures.items()):
        m[f"parse_fail_{reason}"] = float(cnt)
    refinement.per_step = per_step
    refinement.trace = trace if keep_trace else None
    refinement.cost = asdict(dec.cost)
    return refinement


def _step_stats(
    step: int, d: Decoded, inputs: torch.Tensor, seen: set[tuple[int, ...]]
) -> dict[str, float]:
    n, nv = d.valid.shape[0], int(d.valid.sum())
    before = len(seen)
    seen.update(map(tuple, d.outputs[d.valid].tolist()))
    return {
        "step": float(step),
        "num_generated": float(n),
        "parse_fail_frac": (n - nv) / n if n else 0.0,
        "mean_edit_distance": float((d.outputs[d.valid] != inputs[d.valid]).double().mean())
        if nv
        else float("nan"),
        "mean_log_likelihood": float(d.log_likelihood[d.valid].mean()) if nv else float("nan"),
        "new_unique": float(len(seen) - before),
        **{f"parse_fail_{r}": float(c) for r, c in sorted(d.failures.items())},
    }


def _pool(
    trace: Trace,
    seeds: torch.Tensor,
    traj_seed: torch.Tensor,
    traj_run: torch.Tensor,
    runs: list[float],
) -> Refinement:
    """Pool the valid rows run-major (greedy first), then by step; keep first occurrences."""
    run = traj_run[trace.trajectory]
    order = torch.argsort(run * (int(trace.step.max()) + 1) + trace.step, stable=True)
    order = order[trace.valid[order]]
    num_valid = order.shape[0]
    metrics: dict[str, float] = {"num_valid": float(num_valid)}
    if num_valid == 0:
        metrics.update(
            num_unique=0.0,
            unique_frac=0.0,
            mean_edit_distance=float("nan"),
            mean_log_likelihood=float("nan"),
        )
        return Refinement([], metrics)
    pooled = trace.outputs[order]
    _, inverse = torch.unique(pooled, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), num_valid, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(num_valid), "amin")
    keep = order[first.sort().values]
    metrics.update(
        num_unique=float(keep.shape[0]),
        unique_frac=keep.shape[0] / num_valid,
        mean_edit_distance=float((pooled != trace.parents[order]).double().mean()),
        mean_log_likelihood=float(trace.log_likelihood[order].mean()),
    )
    seed_rows = seeds[traj_seed[trace.trajectory[keep]]].tolist()
    temps = [None if runs[r] == 0.0 else runs[r] for r in run[keep].tolist()]
    candidates = [
        Candidate(
            sequence=tuple(o),
            parent=tuple(p),
            seed=tuple(sd),
            refinement_step=st,
            temperature=t,
            log_likelihood=lk,
        )
        for o, p, sd, st, t, lk in zip(
            trace.outputs[keep].tolist(),
            trace.parents[keep].tolist(),
            seed_rows,
            trace.step[keep].tolist(),
            temps,
            trace.log_likelihood[keep].tolist(),
        )
    ]
    return Refinement(candidates, metrics)
