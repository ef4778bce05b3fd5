"""The genetic algorithm baseline: holo's ``DiscreteEvolution``, bit for bit, on an explicit generator.

:func:`ga_step` is one update of holo's optimizer as a pure function (``shared/spec/algorithm.md``
§2); :func:`run_ga` runs it against an Ehrlich function (the baseline and LLOME's seed data);
:class:`GeneticOptimizer` is the same algorithm behind the ask/tell protocol of
:mod:`llome_core.optimizer`, for campaigns whose oracle is a lab.

The paper's setting: the population starts as N copies of the instance's initial solution, and
torch is seeded with the instance seed (50494) *after* the initial solution is drawn; holo uses
the global RNG, we use ``torch.Generator().manual_seed(config.seed)``, which yields the same
stream. Particles are float32 in the authors' pipeline, so the uniform draws here are float32 too.

Oracle calls are counted as the spec counts them: the start population is given (N copies of the
initial solution), so seed data of 10 steps of 1000 particles cost 10 x 1000 calls, and each
step's new population costs N. The ``mean_edit_distance`` of a population is the mean normalized
Hamming distance of each particle to itself before the step's mutation.

One difference from the authors' script (not from holo): botorch's ``SyntheticTestFunction``
adds ``noise_std * randn_like(f)`` on every call when ``noise_std`` is 0.0 rather than None, which
consumes the global RNG between GA steps. Our oracle draws nothing, so our stream is holo's
optimizer driven by a noiseless oracle (the parity fixtures are made that way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from llome_core import metrics
from llome_core.config import GAConfig
from llome_core.ehrlich import Ehrlich
from llome_core.optimizer import Candidate, Key, Labelled, Proposal, compose, edit_distance
from llome_core.progress import Reporter
from llome_core.rng import derive_seed, generator_state, restore_generator

# holo's particles are float32 parameters: rand_like draws float32 uniforms.
_UNIFORM_DTYPE = torch.float32

Objective = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | torch.Tensor"]


def check_config(config: GAConfig) -> None:
    """holo's checks on the GA hyperparameters, as ``ValueError`` with the offending value."""
    if not 0.0 < config.mutation_prob < 1.0:
        raise ValueError(f"mutation_prob must be in (0, 1), got {config.mutation_prob}")
    if not 0.0 <= config.recombine_prob < 1.0:
        raise ValueError(f"recombine_prob must be in [0, 1), got {config.recombine_prob}")
    if config.num_particles < 1:
        raise ValueError(f"num_particles must be positive, got {config.num_particles}")
    if not 0.0 < config.survival_quantile < 1.0:
        raise ValueError(f"survival_quantile must be in (0, 1), got {config.survival_quantile}")
    if config.survival_quantile * config.num_particles < 2:
        raise ValueError(
            f"survival_quantile * num_particles = {config.survival_quantile * config.num_particles}"
            " must be at least 2 so that two parents survive"
        )


def losses_from_values(values: torch.Tensor, feasible: torch.Tensor) -> torch.Tensor:
    """holo's minimization target: float32 ``-value``, ``+inf`` where infeasible."""
    values = torch.as_tensor(values).to(torch.float32)
    return torch.where(
        torch.as_tensor(feasible, dtype=torch.bool), -values, torch.full_like(values, float("inf"))
    )


def ga_step(
    particles: torch.Tensor,
    losses: torch.Tensor,
    generator: torch.Generator,
    num_states: int,
    mutation_prob: float,
    recombine_prob: float,
    survival_quantile: float,
) -> torch.Tensor:
    """The next (N, L) population from the current one and its (N,) float32 losses.

    Survivors have loss <= the ``survival_quantile`` quantile (all survive when it is not finite);
    each other slot gets a uniform crossover of two survivors; then every position of every
    particle is resampled uniformly with probability ``mutation_prob``. Draws, in holo's order:
    parent 1, parent 2, crossover mask, mutation mask, replacement states.
    """
    return ga_step_with_parents(
        particles, losses, generator, num_states, mutation_prob, recombine_prob, survival_quantile
    )[1]


def ga_step_with_parents(
    particles: torch.Tensor,
    losses: torch.Tensor,
    generator: torch.Generator,
    num_states: int,
    mutation_prob: float,
    recombine_prob: float,
    survival_quantile: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ga_step` that also returns the population before mutation (each particle's parent,
    the sequence it was made from): ``(parents, next population)``."""
    n, length = particles.shape
    threshold = torch.quantile(losses, survival_quantile)
    if threshold < float(
        "inf"
    ):  # False for +inf and for NaN (inf - inf interpolation): all survive
        surviving = losses <= threshold
    else:
        surviving = torch.ones_like(losses, dtype=torch.bool)
    survivors = particles[surviving]
    num_surviving = survivors.shape[0]
    num_missing = n - num_surviving

    parent_1 = torch.randint(0, num_surviving, (num_missing,), generator=generator)
    parent_2 = torch.randint(0, num_surviving, (num_missing,), generator=generator)
    crossover = (
        torch.rand((num_missing, length), generator=generator, dtype=_UNIFORM_DTYPE)
        < recombine_prob
    )
    children = torch.where(crossover, survivors[parent_1], survivors[parent_2])
    population = particles.clone()
    population[~surviving] = children

    mutate = torch.rand((n, length), generator=generator, dtype=_UNIFORM_DTYPE) < mutation_prob
    replacements = torch.randint(
        num_states, (n, length), generator=generator, dtype=_UNIFORM_DTYPE
    ).to(particles.dtype)
    return population, torch.where(mutate, replacements, population)


def initial_population(start: torch.Tensor, num_particles: int) -> torch.Tensor:
    """(N, L) int64 population: ``start`` (1, L) repeated, or (M, L) rows tiled cyclically to N."""
    start = torch.as_tensor(start, dtype=torch.long)
    if start.ndim == 1:
        start = start.unsqueeze(0)
    if start.ndim != 2 or start.shape[0] == 0:
        raise ValueError(
            f"start must be a (1, L) or (M, L) tensor of states, got shape {tuple(start.shape)}"
        )
    return start[torch.arange(num_particles) % start.shape[0]].clone()


def _evaluate(objective: Objective, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(objective, Ehrlich):
        return objective.evaluate(x)
    out = objective(x)
    if isinstance(out, tuple):
        values, feasible = out
    else:
        values = torch.as_tensor(out)
        feasible = torch.isfinite(values)
    values = torch.as_tensor(values, dtype=torch.float32)
    feasible = torch.as_tensor(feasible, dtype=torch.bool)
    return torch.where(feasible, values, torch.zeros_like(values)), feasible


@dataclass
class GAResult:
    """What :func:`run_ga` returns."""

    history: list[dict[str, float]]  # one row per evaluated population (round 0 = the start)
    dataset: Labelled  # every distinct particle after each step, first-seen order, with its label
    best_sequence: torch.Tensor  # (L,)
    best_value: float
    particles: torch.Tensor  # the last population (N, L)
    generator_state: list[int] = field(default_factory=list)


def run_ga(
    objective: Ehrlich | Objective,
    config: GAConfig | None = None,
    *,
    start: torch.Tensor | None = None,
    num_states: int | None = None,
    num_steps: int | None = None,
    budget: int | None = None,
    generator: torch.Generator | None = None,
    optimal_value: float = 1.0,
    reporter: Reporter | None = None,
) -> GAResult:
    """Run the GA: evaluate the start population (round 0, given: it costs no oracle call), then
    ``num_steps`` steps, each followed by evaluating the new population (N oracle calls).

    ``objective``: an :class:`Ehrlich` (start defaults to its ``initial_solution(1)``) or a
    callable returning ``(values, feasible)`` or values with -inf for infeasible.
    ``num_steps`` defaults to ``config.num_steps``; ``budget`` (oracle calls) overrides it with
    ``budget // N`` steps. ``generator`` defaults to one seeded with ``config.seed``.
    The dataset holds the populations after each step, as the authors' seed data does.
    """
    config = GAConfig() if config is None else config
    check_config(config)
    if isinstance(objective, Ehrlich):
        num_states = objective.num_states
        if start is None:
            start = objective.initial_solution(1)
    if start is None or num_states is None:
        raise ValueError(
            "start and num_states are required when the objective is not an Ehrlich function"
        )
    if budget is not None:
        if budget < config.num_particles:
            raise ValueError(f"budget {budget} is below one population of {config.num_particles}")
        num_steps = budget // config.num_particles
    num_steps = config.num_steps if num_steps is None else int(num_steps)
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)

    particles = initial_population(start, config.num_particles)
    parents = particles
    seen: list[Labelled] = []  # every step's particles and labels, repeats included
    history: list[dict[str, float]] = []
    best_value, best_sequence = -float("inf"), particles[0].clone()
    t0, c0 = time.perf_counter(), time.process_time()
    losses = torch.zeros(config.num_particles)  # set by round 0, before the first step reads it
    for round_ in range(num_steps + 1):
        if round_ > 0:
            parents, particles = ga_step_with_parents(
                particles,
                losses,
                generator,
                num_states,
                config.mutation_prob,
                config.recombine_prob,
                config.survival_quantile,
            )
        values, feasible = _evaluate(objective, particles)
        if round_ > 0:
            seen.append(Labelled(particles, values, feasible))
        losses = losses_from_values(values, feasible)
        arg_best = int(torch.argmin(losses))  # holo's current solution: first minimal loss
        if feasible[arg_best] and float(values[arg_best]) > best_value:
            best_value, best_sequence = float(values[arg_best]), particles[arg_best].clone()
        history.append(
            {
                "round": round_,
                "oracle_calls": config.num_particles * round_,
                "best_value": max(best_value, 0.0),
                "min_regret": optimal_value - max(best_value, 0.0),
                "mean_regret": float(metrics.regret(values, optimal_value).mean()),
                "feasible_frac": metrics.feasible_frac(feasible),
                "unique_frac": metrics.unique_frac(particles),
                "mean_edit_distance": metrics.mean_edit_distance(particles, parents),
                "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0,
            }
        )
        if reporter is not None:
            reporter("ga", round_, num_steps)
    return GAResult(
        history=history,
        # Each distinct sequence once, in first-seen order, with its latest label (the protocol's
        # rule; a deterministic oracle gives a repeat the same label anyway).
        dataset=Labelled.concat(seen).unique() if seen else Labelled.empty(particles.shape[1]),
        best_sequence=best_sequence,
        best_value=max(best_value, 0.0),
        particles=particles,
        generator_state=generator_state(generator),
    )


def campaign_config(
    batch_size: int,
    seed: int,
    *,
    mutation_prob: float = GAConfig.mutation_prob,
    recombine_prob: float = GAConfig.recombine_prob,
    survival_quantile: float = GAConfig.survival_quantile,
) -> GAConfig:
    """The GA as a campaign's optimizer: one population of ``batch_size`` particles per round, its
    generator a named stream of the campaign's ``seed``."""
    return GAConfig(
        num_particles=batch_size,
        mutation_prob=mutation_prob,
        recombine_prob=recombine_prob,
        survival_quantile=survival_quantile,
        seed=derive_seed(seed, "ga-optimizer"),
    )


class GeneticOptimizer:
    """The GA behind the ask/tell protocol of :mod:`llome_core.optimizer`: ``ask()`` asks for the
    labels of the current population's distinct, not yet labelled sequences; once every particle
    is labelled the next ``ask()`` takes a GA step. Labels of repeated sequences are reused, never
    asked twice; a dropped sequence (never sent to the oracle) counts as failed: infeasible.

    ``start`` is (1, L) (the paper: N copies of one sequence) or (M, L) rows tiled to N
    (:meth:`from_seed_data`: a campaign's best labelled sequences). The whole state is
    ``state()``; :meth:`from_state` resumes bit for bit.
    """

    # A population whose every particle is already labelled is stepped over without asking the
    # oracle; this bounds how many such steps one ask() may take before giving up.
    MAX_SILENT_STEPS = 10_000

    def __init__(
        self,
        config: GAConfig,
        num_states: int,
        dim: int,
        start: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        check_config(config)
        self.config = config
        self.num_states = int(num_states)
        self.dim = int(dim)
        self.particles = initial_population(start, config.num_particles)
        if self.particles.shape[1] != self.dim:
            raise ValueError(
                f"start has length {self.particles.shape[1]}, expected dim = {self.dim}"
            )
        if int(self.particles.min()) < 0 or int(self.particles.max()) >= self.num_states:
            raise ValueError(f"start states must lie in [0, {self.num_states})")
        self.generator = (
            generator if generator is not None else torch.Generator().manual_seed(config.seed)
        )
        self.step = 0  # GA steps taken so far
        # The population before the last step's mutation: each particle's parent (None at start).
        self.parents: torch.Tensor | None = None
        self._labels: dict[bytes, tuple[float, bool]] = {}
        self._order: list[bytes] = []
        self._dropped: set[bytes] = set()
        self._drop_counts: dict[str, int] = {}  # since the last proposal, by reason

    @classmethod
    def from_seed_data(
        cls, config: GAConfig, num_states: int, dim: int, data: Labelled
    ) -> GeneticOptimizer:
        """A GA whose population starts from the best labelled sequences (a lab's parents: the
        best ``max(1, N // 10)``, feasible ones first, by value), tiled to N, told every label."""
        if len(data) == 0:
            raise ValueError("the GA needs at least one labelled sequence to start from")
        order = torch.argsort(data.values + data.feasible.double(), descending=True, stable=True)
        start = data.sequences[order[: max(1, config.num_particles // 10)]]
        opt = cls(config, num_states, dim, start)
        opt.tell(data)
        return opt

    # -- the protocol
    def ask(
        self,
        n: int | None = None,
        *,
        exclude: Iterable[Key] = (),
        min_hamming: int = 0,
        reporter: Reporter | None = None,
    ) -> Proposal:
        """The current population's distinct sequences with no label yet (first-seen order, at
        most ``n``), composed (:func:`~llome_core.optimizer.compose`); what composition removes
        is dropped, i.e. counts as failed, so the GA never waits for it."""
        for _ in range(self.MAX_SILENT_STEPS):
            pending = self._unlabelled()
            if pending:
                break
            self._advance()
            if reporter is not None:
                reporter("ga", self.step, self.step)
        else:
            raise RuntimeError(
                f"{self.MAX_SILENT_STEPS} GA steps produced no unlabelled sequence: the population "
                "has collapsed; raise mutation_prob"
            )
        if n is not None:
            pending = pending[: int(n)]
        candidates = [
            Candidate(sequence=tuple(row), parent=None if parent is None else tuple(parent))
            for row, parent in pending
        ]
        measured = [k for k in self._order if k not in self._dropped]
        kept, removed, composition = compose(
            candidates,
            measured=_rows(measured, self.dim),
            exclude=exclude,
            min_hamming=min_hamming,
        )
        if removed:
            self.drop(torch.tensor([list(c.sequence) for c in removed]), "composition")
        labelled = sum(key in self._labels for key in self._keys())
        proposal = Proposal(
            candidates=kept,
            metrics={
                "ga_step": float(self.step),
                "unique_frac": metrics.unique_frac(self.particles),
                "num_new": float(len(kept)),
                "num_labelled_particles": float(labelled),
                "mean_edit_distance": edit_distance(kept),
                "composition": composition,
                "dropped": self._drop_counts,
            },
        )
        self._drop_counts = {}
        return proposal

    def tell(self, batch: Labelled) -> None:
        """Record labels; a sequence told again takes the newer label in its first-seen place
        (latest wins, the protocol's rule; a repeated upload sends the same label again), and a
        dropped one that gets a label is no longer counted as failed."""
        if batch.sequences.shape[0] and batch.sequences.shape[1] != self.dim:
            raise ValueError(
                f"labelled sequences have length {batch.sequences.shape[1]}, expected {self.dim}"
            )
        arr = batch.sequences.numpy()
        for row, value, ok in zip(arr, batch.values.tolist(), batch.feasible.tolist()):
            key = row.astype("int64").tobytes()
            if key not in self._labels:
                self._order.append(key)
            self._labels[key] = (float(value), bool(ok))
            self._dropped.discard(key)

    def drop(self, sequences: torch.Tensor, reason: str = "dropped") -> None:
        """These sequences get no label (withdrawn, expired, never sent): the GA counts them as
        failed (infeasible). A sequence already labelled keeps its label. The next proposal's
        metrics count the newly dropped sequences by ``reason`` (``dropped``)."""
        rows = torch.as_tensor(sequences, dtype=torch.long).reshape(-1, self.dim)
        for row in rows.numpy():
            key = row.astype("int64").tobytes()
            if key not in self._labels:
                self._labels[key] = (0.0, False)
                self._order.append(key)
                self._dropped.add(key)
                self._drop_counts[reason] = self._drop_counts.get(reason, 0) + 1

    def known(self) -> set[Key]:
        """Every labelled or dropped sequence and every particle waiting for its label."""
        out = {tuple(r) for r in _rows(self._order, self.dim).tolist()}
        return out | {tuple(row) for row, _ in self._unlabelled()}

    def state(self) -> dict[str, Any]:
        """JSON-able state: config, population, step, generator state and every label."""
        return {
            "kind": "ga",
            "config": asdict(self.config),
            "num_states": self.num_states,
            "dim": self.dim,
            "step": self.step,
            "particles": self.particles.tolist(),
            "parents": None if self.parents is None else self.parents.tolist(),
            "generator": generator_state(self.generator),
            "labels": self.labelled().to_dict(),
            "dropped": _rows([k for k in self._order if k in self._dropped], self.dim).tolist(),
            "drop_counts": dict(self._drop_counts),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> GeneticOptimizer:
        """The optimizer saved by :meth:`state`."""
        opt = cls(
            GAConfig(**d["config"]),
            d["num_states"],
            d["dim"],
            torch.tensor(d["particles"], dtype=torch.long),
            generator=restore_generator(d["generator"]),
        )
        opt.step = int(d["step"])
        if d.get("parents") is not None:
            opt.parents = torch.tensor(d["parents"], dtype=torch.long)
        opt.tell(Labelled.from_dict(d["labels"], d["dim"]))
        for row in d.get("dropped", []):
            opt._dropped.add(torch.tensor(row, dtype=torch.int64).numpy().tobytes())
        opt._drop_counts = dict(d.get("drop_counts", {}))
        return opt

    # -- helpers
    def labelled(self) -> Labelled:
        """The current label of every sequence (dropped ones as failed), in first-seen order."""
        if not self._order:
            return Labelled.empty(self.dim)
        seqs = _rows(self._order, self.dim)
        values = torch.tensor([self._labels[k][0] for k in self._order], dtype=torch.float64)
        feasible = torch.tensor([self._labels[k][1] for k in self._order])
        return Labelled(seqs, values, feasible)

    def best(self) -> tuple[torch.Tensor, float] | None:
        """The best labelled feasible sequence and its value, or None."""
        best = None
        for key in self._order:
            value, ok = self._labels[key]
            if ok and (best is None or value > best[1]):
                best = (key, value)
        if best is None:
            return None
        return torch.frombuffer(bytearray(best[0]), dtype=torch.int64).clone(), best[1]

    def _keys(self) -> list[bytes]:
        return [row.tobytes() for row in self.particles.to(torch.int64).numpy()]

    def _unlabelled(self) -> list[tuple[list[int], list[int] | None]]:
        """(sequence, its parent) of each distinct particle with no label, first-seen order."""
        seen: set[bytes] = set()
        parents = self.parents.tolist() if self.parents is not None else None
        pending = []
        for i, (key, row) in enumerate(zip(self._keys(), self.particles.tolist())):
            if key not in self._labels and key not in seen:
                seen.add(key)
                pending.append((row, None if parents is None else parents[i]))
        return pending

    def _advance(self) -> None:
        labels = [self._labels[k] for k in self._keys()]
        values = torch.tensor([v for v, _ in labels], dtype=torch.float32)
        feasible = torch.tensor([f for _, f in labels], dtype=torch.bool)
        self.parents, self.particles = ga_step_with_parents(
            self.particles,
            losses_from_values(values, feasible),
            self.generator,
            self.num_states,
            self.config.mutation_prob,
            self.config.recombine_prob,
            self.config.survival_quantile,
        )
        self.step += 1


def _rows(keys: list[bytes], dim: int) -> torch.Tensor:
    """(n, L) int64 sequences from the byte keys the GA stores its labels under."""
    if not keys:
        return torch.zeros(0, dim, dtype=torch.long)
    return torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.int64).reshape(-1, dim).copy())
