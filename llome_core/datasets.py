"""PropEn pairs and preference triples from labelled sequences (``shared/spec/algorithm.md`` §3.3).

Every distinct sequence is linked to its nearest neighbours (exact Hamming search, itself
included, ties broken by row order) that lie within ``pair_threshold`` (normalized Hamming
distance). SFT, MargE and REINFORCE train on neighbour pairs oriented worse -> better; DPO trains
on triples ``(x, y_w, y_l)`` with ``f(y_w) > f(x) >= f(y_l)`` inside x's neighbourhood. The
result is kept as tensors (:class:`Examples`) and turned into trl's standard records
(``prompt/completion`` or ``prompt/chosen/rejected``) by :meth:`Examples.records`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from llome_core.config import TrainConfig
from llome_core.optimizer import Labelled

ExampleKind = Literal["pairs", "triples"]
Part = Literal["train", "heldout", "all"]

# Rows of the distance matrix computed at once: a (chunk, n) float matrix, 40 MB at n = 10k.
_CHUNK = 1024


class NoTrainingPairs(ValueError):
    """The labelled data give no example to train on; the message says why and what to do."""


@dataclass
class Examples:
    """Training examples as aligned tensors; rows ``[:num_train]`` train, the rest are held out.

    For pairs ``targets`` is the better sequence y; for triples it is the chosen y_w and
    ``rejected`` holds y_l. Values are the oracle's (infeasible = 0).
    """

    kind: ExampleKind
    inputs: torch.Tensor  # (m, L) long
    targets: torch.Tensor  # (m, L) long
    input_values: torch.Tensor  # (m,) float64
    target_values: torch.Tensor  # (m,) float64
    input_feasible: torch.Tensor  # (m,) bool
    num_train: int
    num_sequences: int  # distinct labelled sequences the examples were drawn from
    num_candidates: int  # examples before the infeasible cap
    rejected: torch.Tensor | None = None  # (m, L) long, triples only
    rejected_values: torch.Tensor | None = None
    rejected_feasible: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_heldout(self) -> int:
        return len(self) - self.num_train

    @property
    def rewards(self) -> torch.Tensor:
        """The margin reward r = f(y) - f(x) if positive, else 0 (§4), per example."""
        return (self.target_values - self.input_values).clamp_min(0.0)

    @property
    def infeasible(self) -> torch.Tensor:
        """Rows that involve an infeasible sequence (the input, or for triples also y_l)."""
        bad = ~self.input_feasible
        if self.rejected_feasible is not None:
            bad = bad | ~self.rejected_feasible
        return bad

    def rows(self, part: Part) -> slice:
        if part == "train":
            return slice(0, self.num_train)
        if part == "heldout":
            return slice(self.num_train, len(self))
        if part == "all":
            return slice(0, len(self))
        raise ValueError(f"part must be 'train', 'heldout' or 'all', got {part!r}")

    def records(self, fmt: Any, part: Part = "train") -> list[dict[str, Any]]:
        """trl standard records written with ``fmt`` (a :class:`llome_core.text.TextFormat`).

        Pairs: ``{"prompt", "completion", "reward"}``; triples: ``{"prompt", "chosen", "rejected"}``.
        """
        sl = self.rows(part)
        xs = self.inputs[sl].tolist()
        ys = self.targets[sl].tolist()
        if self.kind == "pairs":
            rewards = self.rewards[sl].tolist()
            return [
                {"prompt": fmt.prompt(x), "completion": fmt.answer(y), "reward": float(r)}
                for x, y, r in zip(xs, ys, rewards)
            ]
        assert self.rejected is not None
        zs = self.rejected[sl].tolist()
        return [
            {"prompt": fmt.prompt(x), "chosen": fmt.answer(y), "rejected": fmt.answer(z)}
            for x, y, z in zip(xs, ys, zs)
        ]


def unique_rows(labelled: Labelled) -> Labelled:
    """``labelled`` without repeated sequences: each in its first place with its latest label
    (:meth:`~llome_core.optimizer.Labelled.unique`, the optimizers' rule)."""
    return labelled.unique()


def max_mismatches(threshold: float, length: int) -> int:
    """Largest mismatch count whose normalized distance is at most ``threshold``."""
    return math.floor(threshold * length + 1e-9)


def nearest_neighbours(sequences: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of each row by Hamming distance, itself included.

    Returns ``(index, mismatches)``, both ``(n, min(k, n))``, nearest first; equal distances are
    broken by row index, so the result does not depend on the platform.
    """
    n, length = sequences.shape
    k = min(k, n)
    x = sequences.to(torch.float32)
    # key = mismatches * n + column is unique per row, so topk has no ties to break arbitrarily;
    # float32 represents it exactly while it stays below 2**24.
    dtype = torch.float32 if n * (length + 1) < 2**24 else torch.float64
    columns = torch.arange(n, dtype=dtype)
    index = torch.empty(n, k, dtype=torch.long)
    mism = torch.empty(n, k, dtype=torch.long)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        # p=0 "norm" counts the positions that differ: exactly the Hamming mismatches.
        d = torch.cdist(x[start:stop], x, p=0).to(dtype)
        top = (d * n + columns).topk(k, dim=1, largest=False, sorted=True)
        index[start:stop] = top.indices
        mism[start:stop] = torch.div(top.values, n, rounding_mode="floor").long()
    return index, mism


def _split_sizes(m: int, config: TrainConfig) -> int:
    """Number of held-out rows for ``m`` examples (5%, at least 1 when there are 2+, capped)."""
    if m < 2:
        return 0
    held = max(1, round(config.heldout_fraction * m))
    return min(held, config.heldout_max, m - 1)


def _cap_and_shuffle(
    infeasible: torch.Tensor,
    cap: float,
    generator: torch.Generator,
    max_examples: int | None = None,
) -> torch.Tensor:
    """Row order after capping infeasible rows at ``cap`` of the result, then shuffling, then
    keeping the first ``max_examples`` (a uniform sample; None keeps all, as the paper).

    As the authors' formatter: keep round(n_ok * cap / (1 - cap)) infeasible rows, sampled.
    """
    ok = torch.nonzero(~infeasible).flatten()
    bad = torch.nonzero(infeasible).flatten()
    if cap < 1.0:
        limit = round(ok.numel() * cap / (1.0 - cap))
        if bad.numel() > limit:
            bad = bad[torch.randperm(bad.numel(), generator=generator)[:limit]].sort().values
    keep = torch.cat([ok, bad])
    return keep[torch.randperm(keep.numel(), generator=generator)][:max_examples]


def _no_pairs_message(
    num_sequences: int, length: int, config: TrainConfig, what: str, reason: str = ""
) -> str:
    limit = max_mismatches(config.pair_threshold, length)
    return (
        f"No training {what}: the {num_sequences} distinct labelled sequence(s) contain no sequence "
        f"that lies within Δx = {config.pair_threshold} (at most {limit} of {length} positions "
        f"different) of a sequence with a better score{reason}, so there is no improvement to learn "
        "from. Add point mutants of the parent sequences (variants that differ from it in a few "
        "positions) to the labelled data, or raise pair_threshold."
    )


def make_pairs(labelled: Labelled, config: TrainConfig, generator: torch.Generator) -> Examples:
    """PropEn pairs (SFT, MargE, REINFORCE): neighbour pairs with different scores, worse -> better.

    Raises :class:`NoTrainingPairs` when there is none.
    """
    data = unique_rows(labelled)
    n, length = data.sequences.shape if len(data) else (0, labelled.sequences.shape[1])
    limit = max_mismatches(config.pair_threshold, length)
    if n >= 2:
        index, mism = nearest_neighbours(data.sequences, config.max_neighbours)
        rows = torch.arange(n)[:, None].expand_as(index)
        near = (mism <= limit) & (index != rows)
        a, b = rows[near], index[near]
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        # Unordered pairs: (i, j) and (j, i) found from both ends count once.
        key = torch.unique(lo * n + hi)
        lo, hi = key // n, key % n
        f = data.values
        differ = f[lo] != f[hi]
        lo, hi = lo[differ], hi[differ]
        x = torch.where(f[lo] < f[hi], lo, hi)
        y = torch.where(f[lo] < f[hi], hi, lo)
    else:
        x = y = torch.empty(0, dtype=torch.long)
    if x.numel() == 0:
        raise NoTrainingPairs(_no_pairs_message(n, length, config, "pairs"))
    candidates = x.numel()
    order = _cap_and_shuffle(
        ~data.feasible[x], config.infeasible_cap, generator, config.max_examples
    )
    if order.numel() == 0:
        raise NoTrainingPairs(
            _no_pairs_message(
                n,
                length,
                config,
                "pairs",
                " other than infeasible ones (pairs that start from an infeasible sequence are "
                f"capped at {config.infeasible_cap:.0%} of the set)",
            )
        )
    x, y = x[order], y[order]
    m = x.numel()
    return Examples(
        kind="pairs",
        inputs=data.sequences[x],
        targets=data.sequences[y],
        input_values=data.values[x],
        target_values=data.values[y],
        input_feasible=data.feasible[x],
        num_train=m - _split_sizes(m, config),
        num_sequences=n,
        num_candidates=candidates,
    )


def make_triples(labelled: Labelled, config: TrainConfig, generator: torch.Generator) -> Examples:
    """Preference triples (DPO): ``(x, y_w, y_l)`` in x's neighbourhood with f(y_w) > f(x) >= f(y_l).

    y_l may be x itself. Triples with an infeasible x or y_l are capped like infeasible pairs.
    """
    data = unique_rows(labelled)
    n, length = data.sequences.shape if len(data) else (0, labelled.sequences.shape[1])
    limit = max_mismatches(config.pair_threshold, length)
    if n >= 2:
        index, mism = nearest_neighbours(data.sequences, config.max_neighbours)
        near = mism <= limit  # includes the row itself (distance 0)
        f = data.values
        fx = f[:, None]
        better = near & (f[index] > fx)
        not_better = near & (f[index] <= fx)
        # (n, k, k): row i, chosen slot a, rejected slot b.
        hit = better[:, :, None] & not_better[:, None, :]
        i, a, b = torch.nonzero(hit, as_tuple=True)
        x, w, lose = i, index[i, a], index[i, b]
    else:
        x = w = lose = torch.empty(0, dtype=torch.long)
    if x.numel() == 0:
        raise NoTrainingPairs(_no_pairs_message(n, length, config, "triples"))
    candidates = x.numel()
    bad = ~data.feasible[x] | ~data.feasible[lose]
    order = _cap_and_shuffle(bad, config.infeasible_cap, generator, config.max_examples)
    if order.numel() == 0:
        raise NoTrainingPairs(
            _no_pairs_message(
                n,
                length,
                config,
                "triples",
                " other than through infeasible sequences (triples with an infeasible input or "
                f"rejected sequence are capped at {config.infeasible_cap:.0%} of the set)",
            )
        )
    x, w, lose = x[order], w[order], lose[order]
    m = x.numel()
    return Examples(
        kind="triples",
        inputs=data.sequences[x],
        targets=data.sequences[w],
        input_values=data.values[x],
        target_values=data.values[w],
        input_feasible=data.feasible[x],
        num_train=m - _split_sizes(m, config),
        num_sequences=n,
        num_candidates=candidates,
        rejected=data.sequences[lose],
        rejected_values=data.values[lose],
        rejected_feasible=data.feasible[lose],
    )


def make_examples(
    labelled: Labelled, objective: str, config: TrainConfig, generator: torch.Generator
) -> Examples:
    """Triples for DPO, pairs for every other objective."""
    if objective == "dpo":
        return make_triples(labelled, config, generator)
    return make_pairs(labelled, config, generator)


def refinement_seeds(examples: Examples, k: int = 200) -> torch.Tensor:
    """The targets (for DPO the chosen) of the ``k`` training rows with the best target score.

    ``(min(k, num_train), L)``; not de-duplicated (§3.4). Ties keep the training order.
    """
    sl = examples.rows("train")
    values = examples.target_values[sl]
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return examples.targets[sl][order].clone()
