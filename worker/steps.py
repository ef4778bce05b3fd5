"""The step bodies: load rows, call llome_core, return the writer of the results.

- ``seed``     (Ehrlich)   ``llome_core.ga.run_ga`` on the campaign's Ehrlich function -> seed labels
- ``train``    (LLOME)     ``LlomeLoop.tell`` (labels not yet told) + ``LlomeLoop.train``
- ``generate`` (either)    the optimizer's ``tell`` / ``drop`` / ``ask``
  (:class:`llome_core.optimizer.Optimizer`: filter and batch composition happen in the core)
- ``label``    (Ehrlich)   ``Ehrlich.evaluate`` on the batch

Each body reads its snapshot with the session it is given and returns ``compute(reporter)``,
which runs with no transaction open and returns ``write(session, campaign)``; the runner
(:mod:`worker.runner`) calls both and commits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.db import utcnow
from api.models import (
    Batch,
    BatchStatus,
    Campaign,
    Candidate,
    CandidateStatus,
    JobStep,
    Measurement,
    MeasurementSource,
    OptimizerKind,
    Sequence,
)
from api.schemas.campaigns import EhrlichParams, GAParams
from api.services import jobs
from api.services import models as model_registry
from llome_core.datasets import NoTrainingPairs
from llome_core.modeling import ModelLoadError
from llome_core.optimizer import Optimizer
from worker import rows
from worker.reporting import DbReporter
from worker.rows import CampaignView
from worker.runtime import Runtime

if TYPE_CHECKING:
    import torch

    from llome_core.loop import LlomeLoop

Writer = Callable[[Session, Campaign], None]
Compute = Callable[[DbReporter], Writer]


class DomainFailure(Exception):
    """A failure the user must act on (no training pairs, a bad model directory): the campaign
    fails with this message and the step is not retried."""


DOMAIN_ERRORS: tuple[type[BaseException], ...] = (DomainFailure, NoTrainingPairs, ModelLoadError)


def prepare(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Compute:
    """The body of the claimed job's step."""
    if c.step == JobStep.SEED:
        return _seed(view)
    if c.step == JobStep.TRAIN:
        return _train(rt, c, view, session)
    if c.step == JobStep.GENERATE:
        return _generate(rt, c, view, session)
    if c.step == JobStep.LABEL:
        return _label(c, view, session)
    raise DomainFailure(f"unknown step {c.step!r}")


def _workdir(rt: Runtime, c: jobs.Claim) -> Path:
    # One directory per attempt: a retried step never writes over (or reads) a half-written
    # checkpoint of the attempt it replaces; the committed state names the one that won.
    path = (
        Path(rt.settings.data_dir).expanduser().resolve()
        / "campaigns"
        / str(c.campaign_id)
        / (f"round-{c.round:03d}-{c.step}-attempt-{c.attempt}")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _feasible(view: CampaignView) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The oracle's hard constraint when it is known (Ehrlich): checkpoint selection then also
    asks for feasible outputs. A wet lab has none."""
    oracle = view.spec.oracle
    if not isinstance(oracle, EhrlichParams):
        return None
    from llome_core.ehrlich import Ehrlich

    return Ehrlich.from_config(oracle.to_config()).is_feasible


def _loop(
    rt: Runtime,
    view: CampaignView,
    state: dict[str, Any] | None,
    workdir: Path,
    model_path: str | None = None,
) -> LlomeLoop:
    """The campaign's LLOME loop, resumed from ``state`` or new from the campaign's config. The
    device is the worker's, not the one that wrote the state (a campaign may move)."""
    from llome_core.loop import LlomeLoop

    if state is None:
        return LlomeLoop(
            view.spec.loop_config(rt.device, model_path),
            num_states=view.alphabet.size,
            dim=view.length,
            workdir=workdir,
            feasible=_feasible(view),
        )
    return LlomeLoop.from_state(state, workdir, feasible=_feasible(view), device=rt.device)


def _optimizer(
    rt: Runtime,
    view: CampaignView,
    state: dict[str, Any] | None,
    workdir: Path,
    seed_data: rows.LabelRows | None,
) -> Optimizer:
    """The campaign's optimizer: the LLOME loop, or the GA (resumed from ``state``, or new from
    ``seed_data``)."""
    params = view.spec.optimizer
    if not isinstance(params, GAParams):
        return _loop(rt, view, state, workdir)
    from llome_core.ga import GeneticOptimizer, campaign_config

    if state is not None:
        return GeneticOptimizer.from_state(state)
    assert seed_data is not None
    config = campaign_config(
        view.batch_size,
        view.seed,
        mutation_prob=params.mutation_prob,
        recombine_prob=params.recombine_prob,
        survival_quantile=params.survival_quantile,
    )
    return GeneticOptimizer.from_seed_data(
        config, view.alphabet.size, view.length, seed_data.labelled(view)
    )


# --- the steps ----------------------------------------------------------------------------


def _seed(view: CampaignView) -> Compute:
    """Ehrlich campaigns: the GA's seed data (every distinct particle after each step)."""
    from llome_core.config import GAConfig
    from llome_core.ehrlich import Ehrlich
    from llome_core.ga import run_ga

    oracle = view.spec.oracle
    assert isinstance(oracle, EhrlichParams)

    def compute(reporter: DbReporter) -> Writer:
        f = Ehrlich.from_config(oracle.to_config())
        seeding: Any = oracle.seeding  # a model made from GAConfig
        result = run_ga(f, GAConfig(**seeding.model_dump()), reporter=reporter)
        texts = view.alphabet.decode(result.dataset.sequences)
        values = result.dataset.values.tolist()
        feasible = result.dataset.feasible.tolist()
        last = result.history[-1] if result.history else {}

        def write(s: Session, campaign: Campaign) -> None:
            seqs = rows.sequences(s, campaign.id, texts)
            measured = set(
                s.scalars(
                    select(Measurement.sequence_id).where(Measurement.campaign_id == campaign.id)
                )
            )
            s.add_all(
                Measurement(
                    campaign_id=campaign.id,
                    sequence_id=seqs[t].id,
                    value=(v if ok else None),
                    feasible=bool(ok),
                    source=MeasurementSource.SEED_GA,
                )
                for t, v, ok in zip(texts, values, feasible)
                if seqs[t].id not in measured
            )
            rows.upsert_round(
                s,
                campaign.id,
                0,
                proposal_metrics=rows.jsonable(
                    {
                        "oracle_calls": int(last.get("oracle_calls", 0)),
                        "seed_sequences": len(texts),
                        "unique_frac": last.get("unique_frac"),
                        "ga": rows.jsonable(last),
                    }
                ),
            )

        return write

    return compute


def _train(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Compute:
    """LLOME's outer step: tell the loop the labels it has not seen, fine-tune, checkpoint."""
    prev = rows.round_state(session, view.id, c.round - 1) if c.round > 1 else None
    new = rows.labels(session, view.id, unobserved_only=True)
    workdir = _workdir(rt, c)
    try:  # where the server keeps the starting model (a later round's state names it)
        model_path = model_registry.path_for(session, view.spec.model) if prev is None else None
    except model_registry.ModelGone as exc:
        raise DomainFailure(str(exc)) from None

    def compute(reporter: DbReporter) -> Writer:
        loop = _loop(rt, view, prev, workdir, model_path)
        if new.ids:
            loop.tell(new.labelled(view))
        info = loop.train(reporter)
        state = loop.state()

        def write(s: Session, campaign: Campaign) -> None:
            rows.mark_observed(s, new.ids, c.round)
            rows.upsert_round(
                s,
                campaign.id,
                c.round,
                state=state,
                checkpoint_path=loop.checkpoint,
                checkpoint_sha256=loop.checkpoint_sha256,
                train_metrics=rows.jsonable(info),
            )

        return write

    return compute


def _generate(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Compute:
    """One batch of at most ``batch_size`` new candidates from the campaign's optimizer (LLOME:
    refine and filter with the round's trained model; the GA: one population)."""
    if view.optimizer_kind == OptimizerKind.GA:
        state = rows.round_state(session, view.id, c.round - 1) if c.round > 1 else None
    else:
        state = rows.round_state(session, view.id, c.round)
        if state is None:
            raise DomainFailure(
                f"round {c.round} has no trained model state; was its train step lost?"
            )
    new = rows.labels(session, view.id, unobserved_only=True)
    seed_data = rows.labels(session, view.id, unobserved_only=False) if state is None else None
    known = rows.known_texts(session, view.id)
    dropped = rows.dropped_texts(session, view.id)
    controls = rows.control_texts(session, view)
    params = view.spec.optimizer
    workdir = _workdir(rt, c)

    def compute(reporter: DbReporter) -> Writer:
        opt = _optimizer(rt, view, state, workdir, seed_data=seed_data)
        if new.ids:
            opt.tell(new.labelled(view))
        if dropped:  # withdrawn and expired candidates get no label (after the real labels)
            opt.drop(view.encode(dropped), "withdrawn or expired")
        mine = opt.known()
        others = [t for t, k in zip(known, view.keys(known)) if k not in mine]
        if others:  # sequences the campaign holds that the optimizer never saw (controls)
            opt.drop(view.encode(others), "known to the campaign")
        proposal = opt.ask(
            view.batch_size,
            exclude=view.keys(list(params.exclude)),
            min_hamming=params.min_hamming,
            reporter=reporter,
        )
        state_after = opt.state()
        from llome_core.loop import LlomeLoop

        if isinstance(opt, LlomeLoop):
            objective: str | None = opt.schedule[c.round - 1]
            checkpoint_sha256 = opt.checkpoint_sha256
        else:  # the GA has no model
            objective = checkpoint_sha256 = None

        def write(s: Session, campaign: Campaign) -> None:
            rows.mark_observed(s, new.ids, c.round)
            rows.upsert_round(
                s,
                campaign.id,
                c.round,
                state=state_after,
                proposal_metrics=rows.jsonable(
                    {**proposal.metrics, "proposed": len(proposal.candidates)}
                ),
            )
            rows.write_batch(
                s,
                campaign,
                view,
                c.round,
                proposal.candidates,
                objective=objective,
                checkpoint_sha256=checkpoint_sha256,
                controls=controls,
            )

        return write

    return compute


def _label(c: jobs.Claim, view: CampaignView, session: Session) -> Compute:
    """Ehrlich campaigns: the oracle labels the whole batch at once."""
    from llome_core.ehrlich import Ehrlich

    oracle = view.spec.oracle
    assert isinstance(oracle, EhrlichParams)
    batch = session.scalar(
        select(Batch).where(Batch.campaign_id == view.id, Batch.round == c.round)
    )
    if batch is None:
        raise DomainFailure(f"round {c.round} has no batch to label")
    cands = (
        session.execute(
            select(Candidate.id, Candidate.sequence_id, Sequence.text)
            .join(Sequence, Sequence.id == Candidate.sequence_id)
            .where(Candidate.batch_id == batch.id)
            .order_by(Candidate.position)
        )
        .tuples()
        .all()
    )
    batch_id = batch.id

    def compute(reporter: DbReporter) -> Writer:
        reporter("label", 0, len(cands))
        f = Ehrlich.from_config(oracle.to_config())
        values, feasible = f.evaluate(view.encode([r[2] for r in cands]))
        reporter("label", len(cands), len(cands))

        def write(s: Session, campaign: Campaign) -> None:
            done = set(
                s.scalars(select(Measurement.candidate_id).where(Measurement.batch_id == batch_id))
            )
            for (cid, sid, _), v, ok in zip(cands, values.tolist(), feasible.tolist()):
                if cid in done:
                    continue
                s.add(
                    Measurement(
                        campaign_id=campaign.id,
                        sequence_id=sid,
                        candidate_id=cid,
                        batch_id=batch_id,
                        value=(float(v) if ok else None),
                        feasible=bool(ok),
                        source=MeasurementSource.ORACLE,
                    )
                )
            s.execute(
                update(Candidate)
                .where(Candidate.batch_id == batch_id)
                .values(status=CandidateStatus.MEASURED)
            )
            s.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(status=BatchStatus.LABELLED, labelled_at=utcnow())
            )
            s.flush()
            s.expire_all()  # advance() re-reads the batch it just labelled

        return write

    return compute
