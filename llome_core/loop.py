"""LLOME (Algorithm 1) as an ask/tell state machine: ``tell`` labels, ``train``, ``generate``.

The loop never calls the oracle. A driver alternates (the :class:`~llome_core.optimizer.Optimizer`
protocol, shared with the GA)::

    loop.tell(seed_data)
    while not loop.done:
        proposal = loop.ask()                # = loop.train() then loop.generate()
        loop.tell(oracle(proposal))          # minutes for Ehrlich, days for a wet lab

Between any two calls ``loop.state()`` is the whole state (labelled data, round, temperature
statistic, checkpoint path, training seeds): ``LlomeLoop.from_state`` resumes it, and because
every random draw comes from a stream named ``(seed, purpose, round)`` and the model is reloaded
from its checkpoint, a resumed run proposes bit for bit what the uninterrupted one would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from llome_core import generation, modeling, selection, training
from llome_core.config import LoopConfig, parse_schedule
from llome_core.optimizer import Key, Labelled, Proposal, compose, edit_distance, keys
from llome_core.progress import Reporter, null_reporter
from llome_core.rng import generator
from llome_core.text import TextFormat


class LoopStateError(RuntimeError):
    """A call out of order (e.g. ``generate`` before ``train``); the message says what is next."""


@dataclass
class _State:
    round: int = 0  # outer rounds whose batch has been proposed
    phase: str = "observe"  # what comes next: observe (seed data) -> train -> generate -> observe
    labelled: dict[str, Any] | None = None
    train_from: int = 0  # rows of `labelled` observed since the last training round start here
    # rows before `train_from` whose label a later tell replaced: fresh data for the next round too
    relabelled: list[int] = field(default_factory=list)
    pending: list[list[int]] = field(default_factory=list)
    excluded: list[list[int]] = field(default_factory=list)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    seeds: list[list[int]] = field(default_factory=list)  # refinement seeds of the last training
    prev_mean_distance: float | None = None
    prev_stage: str | None = None
    # [sequence, seed of its trajectory, log-likelihood] of the open proposal: reward, calibration
    proposed: list[list[Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # since the last proposal, by reason


class LlomeLoop:
    """The LLOME bilevel optimizer for sequences of ``dim`` states in ``[0, num_states)``."""

    def __init__(
        self,
        config: LoopConfig,
        *,
        num_states: int,
        dim: int,
        workdir: str | Path,
        feasible: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """``feasible``: the oracle's hard constraint, when known (Ehrlich); checkpoint selection
        then also requires feasible greedy outputs (spec §3.7). A wet lab has none."""
        self.config = config
        self.feasible = feasible
        self.num_states = num_states
        self.dim = dim
        self.workdir = Path(workdir)
        self.schedule = parse_schedule(config.objective, config.rounds)
        self.format = TextFormat(config.model.text_format)
        self._s = _State()
        self._model: Any = None  # (checkpoint path, model, tokenizer) kept between steps
        self._labelled_cache: Labelled | None = None

    # ---- state ---------------------------------------------------------------------------
    @property
    def round(self) -> int:
        return self._s.round

    @property
    def phase(self) -> str:
        return self._s.phase

    @property
    def done(self) -> bool:
        return self._s.round >= self.config.rounds and self._s.phase == "observe"

    @property
    def history(self) -> list[dict[str, Any]]:
        """Metrics of each step so far, one dict per train / generate / observe."""
        return self._s.history

    @property
    def labelled(self) -> Labelled | None:
        if self._labelled_cache is None and self._s.labelled is not None:
            self._labelled_cache = Labelled.from_dict(self._s.labelled, self.dim)
        return self._labelled_cache

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the next step starts from (None before the first training)."""
        return self._s.checkpoint

    @property
    def checkpoint_sha256(self) -> str | None:
        return self._s.checkpoint_sha256

    def state(self) -> dict[str, Any]:
        s = self._s
        return {
            "kind": "llome",
            "version": 1,
            "config": self.config.to_dict(),
            "num_states": self.num_states,
            "dim": self.dim,
            **{k: getattr(s, k) for k in s.__dataclass_fields__},
        }

    @classmethod
    def from_state(
        cls,
        d: dict[str, Any],
        workdir: str | Path,
        feasible: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | None = None,
    ) -> LlomeLoop:
        """The loop whose ``state()`` is ``d``; ``device``: run there instead of the state's (a
        campaign may move between workers)."""
        config = LoopConfig.from_dict(d["config"])
        if device is not None:
            config = replace(config, device=device)
        loop = cls(
            config,
            num_states=int(d["num_states"]),
            dim=int(d["dim"]),
            workdir=workdir,
            feasible=feasible,
        )
        loop._s = _State(**{k: d[k] for k in _State.__dataclass_fields__ if k in d})
        loop._merge_repeated_rows()
        return loop

    # ---- ask / tell ----------------------------------------------------------------------
    def known(self) -> set[Key]:
        """Every sequence labelled, proposed and not yet labelled, or dropped."""
        known: set[Key] = {tuple(p) for p in self._s.pending}
        known |= {tuple(p) for p in self._s.excluded}
        if self.labelled is not None:
            known |= set(keys(self.labelled.sequences))
        return known

    def drop(self, sequences: torch.Tensor, reason: str = "dropped") -> None:
        """Never propose these sequences (withdrawn by the lab, known to the campaign elsewhere);
        a proposed one no longer waits for its label. The next proposal's metrics count the
        newly dropped sequences by ``reason`` (``dropped``)."""
        rows = torch.as_tensor(sequences, dtype=torch.long).reshape(-1, self.dim).tolist()
        gone = {tuple(r) for r in rows}
        self._s.pending = [p for p in self._s.pending if tuple(p) not in gone]
        have = {tuple(r) for r in self._s.excluded}
        new = [r for r in dict.fromkeys(map(tuple, rows)) if r not in have]
        self._s.excluded += [list(r) for r in new]
        if new:
            self._s.dropped[reason] = self._s.dropped.get(reason, 0) + len(new)

    def ask(
        self,
        n: int | None = None,
        *,
        exclude: Iterable[Key] = (),
        min_hamming: int = 0,
        reporter: Reporter | None = None,
    ) -> Proposal:
        """One outer round: train on the latest labels (unless done already), then refine,
        filter and compose at most ``n`` (default ``config.batch_size``) candidates."""
        if self._s.phase == "train":
            self.train(reporter)
        return self.generate(reporter, n=n, exclude=exclude, min_hamming=min_hamming)

    def tell(self, batch: Labelled) -> None:
        """Add oracle labels: the seed data first, then each proposed batch (in any pieces). A
        sequence told again takes the newer label in place (the protocol's rule) and counts as
        fresh data for the next training round."""
        if batch.sequences.shape[1] != self.dim:
            raise ValueError(
                f"sequences have length {batch.sequences.shape[1]}, expected {self.dim}"
            )
        prev = self.labelled if self.labelled is not None else Labelled.empty(self.dim)
        self._labelled_cache, rows = prev.merge_positions(batch)
        self._s.labelled = self._labelled_cache.to_dict()
        older = {r for r in rows.tolist() if r < self._s.train_from}
        self._s.relabelled = sorted(older.union(self._s.relabelled))
        seen = {tuple(r) for r in batch.sequences.tolist()}
        self._s.pending = [p for p in self._s.pending if tuple(p) not in seen]
        if self._s.phase == "observe" and not self.done:
            self._s.phase = "train"
        self._s.history.append(
            {"step": "observe", "round": self._s.round, **self._batch_metrics(batch)}
        )

    def train(self, reporter: Reporter | None = None) -> dict[str, Any]:
        """The outer-loop step: fine-tune the current checkpoint on this round's training pool."""
        self._expect("train")
        reporter = reporter or null_reporter
        t = self._s.round
        objective = self.schedule[t]
        pool = self._training_pool(t)
        model, tokenizer = self._load_model()
        started = time.perf_counter()
        result = training.train_round(
            model,
            tokenizer,
            self.format,
            pool,
            objective=objective,
            config=self.config.train,
            round_index=t,
            seed=self.config.seed,
            output_dir=self.workdir / f"round-{t + 1:02d}" / "trainer",
            device=self.config.device,
            reporter=reporter,
            # The tiny model's defaults also for a checkpoint of it (a campaign continued).
            is_tiny_model=modeling.is_own_tokenizer(tokenizer, self.num_states),
            num_seeds=self.config.generate.num_seeds or 0,  # resolved by LoopConfig
            num_states=self.num_states,
            feasible=self.feasible,
        )
        path = self.workdir / f"round-{t + 1:02d}" / "checkpoint"
        sha = modeling.save_checkpoint(result.model, tokenizer, path)
        self._model = (str(path), result.model, tokenizer)
        s = self._s
        s.checkpoint, s.checkpoint_sha256 = str(path), sha
        s.seeds = result.seeds.tolist()
        s.train_from = len(self.labelled) if self.labelled is not None else 0
        s.relabelled = []
        s.phase = "generate"
        info = {
            "step": "train",
            "round": t + 1,
            "objective": objective,
            "training_pool": len(pool),
            "replay_fraction": self.config.train.replay_fraction,
            "checkpoint_sha256": sha,
            "seconds": time.perf_counter() - started,
            **result.metrics,
        }
        s.history.append(_finite(info))
        return info

    def generate(
        self,
        reporter: Reporter | None = None,
        *,
        n: int | None = None,
        exclude: Iterable[Key] = (),
        min_hamming: int = 0,
    ) -> Proposal:
        """The inner loop: iterative refinement from the training seeds, then the filter (at most
        ``n`` new sequences, none of ``known()`` or ``exclude``) and the batch composition
        (:func:`~llome_core.optimizer.compose`; what it removes is dropped)."""
        self._expect("generate")
        n = self.config.batch_size if n is None else int(n)
        exclude = set(exclude)
        reporter = reporter or null_reporter
        s, t = self._s, self._s.round
        stage = self.schedule[t]
        # The temperature statistic restarts with each training stage (spec §3.5).
        prev = s.prev_mean_distance if s.prev_stage == stage else None
        temperatures = generation.temperatures_for(prev)
        model, tokenizer = self._load_model()
        started = time.perf_counter()
        refinement = generation.refine(
            model,
            tokenizer,
            self.format,
            torch.tensor(s.seeds, dtype=torch.long).reshape(-1, self.dim),
            num_states=self.num_states,
            dim=self.dim,
            config=self.config.generate,
            temperatures=temperatures,
            generator=generator(self.config.seed, "generate", t),
            reporter=reporter,
        )
        filter_started, filter_cpu = time.perf_counter(), time.process_time()
        chosen = selection.select(
            refinement.candidates,
            n,
            exclude=self.known() | exclude,
            quantile=self.config.generate.likelihood_quantile,
            generator=generator(self.config.seed, "filter", t),
        )
        labelled = self.labelled
        chosen, removed, composition = compose(
            chosen,
            measured=labelled.sequences if labelled is not None else torch.zeros(0, self.dim),
            exclude=exclude,
            min_hamming=min_hamming,
        )
        filter_seconds = time.perf_counter() - filter_started
        filter_cpu_seconds = time.process_time() - filter_cpu
        s.pending += [list(c.sequence) for c in chosen]
        if removed:
            self.drop(torch.tensor([list(c.sequence) for c in removed]), "composition")
        s.proposed = [
            [list(c.sequence), list(c.seed or c.sequence), c.log_likelihood] for c in chosen
        ]
        distance = float(refinement.metrics["mean_edit_distance"])
        s.prev_mean_distance = distance if math.isfinite(distance) else None  # NaN: no valid output
        s.prev_stage = stage
        s.round = t + 1
        s.phase = "observe"
        info = {
            "step": "generate",
            "round": t + 1,
            "objective": stage,
            "temperatures": list(temperatures),
            "proposed": len(chosen),
            "seconds": time.perf_counter() - started,
            # The filter's share of them (ranking by likelihood and composition), for accounting.
            "filter_seconds": filter_seconds,
            "filter_cpu_seconds": filter_cpu_seconds,
            **refinement.metrics,
            # The §3.5 statistic (every valid output against its input) and the batch's own.
            "refinement_mean_edit_distance": distance,
            "mean_edit_distance": edit_distance(chosen),
            "composition": composition,
            "dropped": s.dropped,
        }
        s.dropped = {}
        s.history.append(_finite(info))
        return Proposal(candidates=chosen, metrics=info)

    # ---- internals -----------------------------------------------------------------------
    def _expect(self, phase: str) -> None:
        if self._s.phase != phase:
            if self.done:
                raise LoopStateError(f"all {self.config.rounds} rounds are done")
            raise LoopStateError(f"cannot {phase} now: the loop waits for {self._s.phase}")

    def _training_pool(self, t: int) -> Labelled:
        """Round 1: all seed data. Later: the labels told since the last training (new sequences
        and new labels of older ones), plus ``replay_fraction`` of the other older labels."""
        data = self.labelled
        assert data is not None  # phase "train" is only reached after an observe
        n = len(data)
        is_fresh = torch.zeros(n, dtype=torch.bool)
        is_fresh[0 if t == 0 else self._s.train_from :] = True
        is_fresh[torch.tensor(self._s.relabelled, dtype=torch.long)] = True
        fresh = torch.nonzero(is_fresh).reshape(-1)
        older = torch.nonzero(~is_fresh).reshape(-1)
        frac = self.config.train.replay_fraction or 0.0  # resolved by LoopConfig
        if t > 0 and frac > 0 and len(older):
            g = generator(self.config.seed, "replay", t)
            keep = older[torch.randperm(len(older), generator=g)[: round(frac * len(older))]]
            fresh = torch.cat([keep.sort().values, fresh])
        return Labelled(data.sequences[fresh], data.values[fresh], data.feasible[fresh])

    def _batch_metrics(self, batch: Labelled) -> dict[str, Any]:
        """Oracle-side metrics of a labelled batch: value, feasibility, uniqueness, and for the
        loop's own proposals the margin reward against the trajectory's seed and calibration bins."""
        out: dict[str, Any] = {
            "labelled": len(batch),
            "max_value": float(batch.values.max()) if len(batch) else None,
            "mean_value": float(batch.values.mean()) if len(batch) else None,
            "feasible_frac": float(batch.feasible.float().mean()) if len(batch) else None,
            "unique_frac": (
                torch.unique(batch.sequences, dim=0).shape[0] / len(batch) if len(batch) else None
            ),
        }
        info = {tuple(seq): (tuple(seed), ll) for seq, seed, ll in self._s.proposed}
        data = self.labelled
        if not info or data is None:
            return out
        value_of = dict(zip(map(tuple, data.sequences.tolist()), data.values.tolist()))
        rewards, calibration = [], []
        for seq, value in zip(map(tuple, batch.sequences.tolist()), batch.values.tolist()):
            if seq not in info:
                continue
            seed, ll = info[seq]
            rewards.append(max(0.0, value - value_of.get(seed, 0.0)))
            if ll is not None:
                calibration.append((ll, value))
        if rewards:
            out["max_reward"], out["mean_reward"] = max(rewards), sum(rewards) / len(rewards)
        if calibration:
            out["calibration"] = _calibration_bins(calibration)
        return out

    def _merge_repeated_rows(self) -> None:
        """States written before labels were merged may hold a sequence twice: keep its latest
        label in its first place, as :meth:`tell` does now, and keep ``train_from`` pointing at
        the same fresh data."""
        s = self._s
        if s.labelled is None:
            return
        raw = Labelled.from_dict(s.labelled, self.dim)
        merged, where = Labelled.empty(self.dim).merge_positions(raw)
        if len(merged) == len(raw):
            return
        slots = where.tolist()
        # Slots are numbered in first-seen order: the distinct sequences of the first rows.
        train_from = max(slots[: s.train_from], default=-1) + 1
        again = {slot for slot in slots[s.train_from :] if slot < train_from}
        s.relabelled = sorted(again.union(slots[r] for r in s.relabelled))
        s.labelled, s.train_from = merged.to_dict(), train_from
        self._labelled_cache = merged

    def _load_model(self) -> tuple[Any, Any]:
        path = self._s.checkpoint
        if self._model is not None and self._model[0] == str(path):
            return self._model[1], self._model[2]
        if path is None:
            model, tokenizer = modeling.create_or_load(
                self.config.model, self.num_states, self.config.seed, self.config.device
            )
        else:
            model, tokenizer = modeling.load_checkpoint(path, self.config.device)
        self._model = (str(path), model, tokenizer)
        return model, tokenizer


def _calibration_bins(pairs: list[tuple[float, float]], bins: int = 5) -> list[dict[str, float]]:
    """Mean oracle value per likelihood quantile bin: is the model's confidence worth anything?"""
    pairs = sorted(pairs)
    size = max(1, -(-len(pairs) // bins))
    out = []
    for i in range(0, len(pairs), size):
        chunk = pairs[i : i + size]
        out.append(
            {
                "mean_log_likelihood": sum(p[0] for p in chunk) / len(chunk),
                "mean_value": sum(p[1] for p in chunk) / len(chunk),
                "count": float(len(chunk)),
            }
        )
    return out


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become None: the state is JSON for Postgres, which refuses them."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}
