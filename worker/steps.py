"""The step bodies: claim the job, load rows, call llome_core, write the results in one transaction.

This module is the one place where the service meets the algorithms:

- ``seed``     (Ehrlich)   ``llome_core.ga.run_ga`` on the campaign's Ehrlich function -> seed labels
- ``train``    (LLOME)     ``LlomeLoop.observe`` (labels not yet seen) + ``LlomeLoop.train``
- ``generate`` (LLOME)     ``LlomeLoop.exclude`` (sequences it does not know) + ``LlomeLoop.generate``
- ``generate`` (GA)        ``GeneticOptimizer.observe`` + ``GeneticOptimizer.propose``
- ``label``    (Ehrlich)   ``Ehrlich.evaluate`` on the batch

Each step runs as: claim (one UPDATE) -> read a snapshot (short transaction) -> compute with no
transaction open -> write everything in one transaction that first checks the claim still holds
(the ``attempt`` fence), then marks the job done and advances the campaign. A duplicate delivery
finds the job done and returns; a stale worker's late write is discarded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.db import session_scope, utcnow
from api.models import (
    TERMINAL_CAMPAIGN,
    Batch,
    BatchStatus,
    Campaign,
    CampaignStatus,
    Candidate,
    CandidateStatus,
    JobStatus,
    JobStep,
    Measurement,
    MeasurementSource,
    OptimizerKind,
    Round,
    Sequence,
)
from api.schemas.campaigns import CampaignCreate, EhrlichParams, GAParams, LlomeParams
from api.services import campaigns as campaign_service
from api.services.candidates import expire_overdue, mutations
from api.services import jobs
from api.services import models as model_registry
from llome_core.optimizer import Candidate as CoreCandidate
from llome_core.optimizer import Labelled
from llome_core.progress import Cancelled
from llome_core.rng import derive_seed
from llome_core.sequences import Alphabet, pairwise_hamming
from worker.reporting import DbReporter, Heartbeat
from worker.runtime import Runtime

log = logging.getLogger("llome.worker")

Writer = Callable[[Session, Campaign], None]


class DomainFailure(Exception):
    """A failure the user must act on (no training pairs, a bad model directory): the campaign
    fails with this message and the step is not retried."""


def _domain_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [DomainFailure]
    try:
        from llome_core.datasets import NoTrainingPairs

        errors.append(NoTrainingPairs)
    except ImportError:  # pragma: no cover - older core
        pass
    try:
        from llome_core.modeling import ModelLoadError

        errors.append(ModelLoadError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


# Transient: the database went away for a moment. The job is given back and Celery retries.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DBAPIError,)


# --- snapshots ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignView:
    """What a step needs of its campaign, read once, usable with no session open."""

    id: int
    spec: CampaignCreate
    alphabet: Alphabet
    length: int
    seed: int
    batch_size: int
    optimizer_kind: str

    @classmethod
    def of(cls, c: Campaign) -> "CampaignView":
        return cls(c.id, campaign_service.spec_of(c), Alphabet(c.alphabet), c.length, c.seed,
                   c.batch_size, c.optimizer_kind)

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.length, dtype=torch.long)
        return self.alphabet.encode(texts, self.length)

    def decode(self, states: Any) -> str:
        return self.alphabet.decode_one(states)


@dataclass
class LabelRows:
    ids: list[int]
    texts: list[str]
    values: list[float | None]
    feasible: list[bool]

    def labelled(self, view: CampaignView) -> Labelled:
        return Labelled(
            view.encode(self.texts),
            torch.tensor([v if (f and v is not None) else 0.0 for v, f in zip(self.values, self.feasible)],
                         dtype=torch.float64),
            torch.tensor(self.feasible, dtype=torch.bool),
        )


def _labels(session: Session, campaign_id: int, *, unobserved_only: bool) -> LabelRows:
    q = (
        select(Measurement.id, Sequence.text, Measurement.value, Measurement.feasible)
        .join(Sequence, Sequence.id == Measurement.sequence_id)
        .where(Measurement.campaign_id == campaign_id, Measurement.superseded_at.is_(None))
        .order_by(Measurement.id)
    )
    if unobserved_only:
        q = q.where(Measurement.observed_round.is_(None))
    rows = session.execute(q).tuples().all()
    return LabelRows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                     [bool(r[3]) for r in rows])


def _round_state(session: Session, campaign_id: int, number: int) -> dict[str, Any] | None:
    return session.scalar(select(Round.state).where(Round.campaign_id == campaign_id, Round.number == number))


def _known_texts(session: Session, campaign_id: int) -> list[str]:
    """Every sequence the campaign has measured or proposed."""
    return list(session.scalars(select(Sequence.text).where(Sequence.campaign_id == campaign_id)))


def _dropped_texts(session: Session, campaign_id: int) -> list[str]:
    """Sequences of candidates withdrawn or expired in the lab (never proposed again)."""
    return list(session.scalars(
        select(Sequence.text).join(Candidate, Candidate.sequence_id == Sequence.id)
        .where(Candidate.campaign_id == campaign_id, Candidate.is_control.is_(False),
               Candidate.status.in_([CandidateStatus.WITHDRAWN, CandidateStatus.EXPIRED]))
        .order_by(Candidate.id)
    ))


def _control_texts(session: Session, view: CampaignView) -> list[str]:
    """The optimizer config's controls, ``best`` resolved to the best measured sequence now."""
    out: list[str] = []
    for t in view.spec.optimizer.controls:
        if t == "best":
            best = session.scalar(
                select(Sequence.text).join(Measurement, Measurement.sequence_id == Sequence.id)
                .where(Measurement.campaign_id == view.id, Measurement.feasible.is_(True),
                       Measurement.value.is_not(None), Measurement.superseded_at.is_(None))
                .order_by(Measurement.value.desc(), Measurement.id).limit(1))
            if best is not None:
                out.append(best)
        else:
            out.append(t)
    return out


def _measured_texts(session: Session, view: CampaignView) -> list[str]:
    """Measured sequences, read only when the batch's min_hamming needs them."""
    if not view.spec.optimizer.min_hamming:
        return []
    return _labels(session, view.id, unobserved_only=False).texts


def _compose(view: CampaignView, candidates: list[CoreCandidate],
             measured: list[str]) -> tuple[list[CoreCandidate], list[CoreCandidate], dict[str, Any]]:
    """The optimizer config's batch composition controls, in proposal order (best first):
    ``exclude`` drops listed sequences; ``min_hamming`` keeps a candidate only if it differs in
    at least that many positions from every measured sequence and every candidate kept before
    it. Returns (kept, removed, what was removed and why) for the round's metrics."""
    params = view.spec.optimizer
    info: dict[str, Any] = {"min_hamming": params.min_hamming, "excluded": 0, "too_close": 0}
    banned = set(params.exclude)
    keep = torch.tensor([view.decode(cand.sequence) not in banned for cand in candidates], dtype=torch.bool)
    info["excluded"] = int((~keep).sum())
    if params.min_hamming > 0 and candidates:
        seqs = torch.tensor([list(cand.sequence) for cand in candidates], dtype=torch.long)
        if measured:
            keep &= (pairwise_hamming(seqs, view.encode(measured)) >= params.min_hamming).all(dim=1)
        close = pairwise_hamming(seqs, seqs) < params.min_hamming
        blocked = torch.zeros(len(candidates), dtype=torch.bool)
        for i in range(len(candidates)):  # greedy: one vector op per candidate
            if keep[i] and not blocked[i]:
                blocked |= close[i]
            else:
                keep[i] = False
        info["too_close"] = int(len(candidates) - info["excluded"] - int(keep.sum()))
    kept = [cand for cand, k in zip(candidates, keep.tolist()) if k]
    removed = [cand for cand, k in zip(candidates, keep.tolist()) if not k]
    return kept, removed, info


def _upsert_round(session: Session, campaign_id: int, number: int, **values: Any) -> Round:
    rnd = session.scalar(select(Round).where(Round.campaign_id == campaign_id, Round.number == number))
    if rnd is None:
        rnd = Round(campaign_id=campaign_id, number=number)
        session.add(rnd)
    for k, v in values.items():
        setattr(rnd, k, v)
    session.flush()
    return rnd


def _sequences(session: Session, campaign_id: int, texts: list[str]) -> dict[str, Sequence]:
    found = {s.text: s for s in session.scalars(
        select(Sequence).where(Sequence.campaign_id == campaign_id, Sequence.text.in_(texts))
    )} if texts else {}
    new = [Sequence(campaign_id=campaign_id, text=t) for t in dict.fromkeys(texts) if t not in found]
    session.add_all(new)
    session.flush()
    return {**found, **{s.text: s for s in new}}


def _mark_observed(session: Session, ids: list[int], round_: int) -> None:
    for i in range(0, len(ids), 5000):
        session.execute(
            update(Measurement).where(Measurement.id.in_(ids[i : i + 5000]), Measurement.observed_round.is_(None))
            .values(observed_round=round_)
        )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON: no NaN or infinity (JSON has neither), tensors as lists."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, torch.Tensor):
            v = v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, dict):
            v = _jsonable(v)
        out[k] = v
    return out


def _workdir(rt: Runtime, c: jobs.Claim) -> Path:
    # One directory per attempt: a retried step never writes over (or reads) a half-written
    # checkpoint of the attempt it replaces; the committed state names the one that won.
    path = Path(rt.settings.data_dir).expanduser().resolve() / "campaigns" / str(c.campaign_id) / (
        f"round-{c.round:03d}-{c.step}-attempt-{c.attempt}"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the steps ----------------------------------------------------------------------------


def _seed(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Callable[[DbReporter], Writer]:
    """Ehrlich campaigns: the GA's seed data (every distinct particle after each step)."""
    from llome_core.config import GAConfig
    from llome_core.ehrlich import Ehrlich
    from llome_core.ga import run_ga

    oracle = view.spec.oracle
    assert isinstance(oracle, EhrlichParams)

    def compute(reporter: DbReporter) -> Writer:
        f = Ehrlich.from_config(oracle.to_config())
        result = run_ga(f, GAConfig(**oracle.seeding.model_dump()), reporter=reporter)
        texts = view.alphabet.decode(result.dataset.sequences)
        values = result.dataset.values.tolist()
        feasible = result.dataset.feasible.tolist()
        last = result.history[-1] if result.history else {}

        def write(s: Session, campaign: Campaign) -> None:
            seqs = _sequences(s, campaign.id, texts)
            measured = set(s.scalars(select(Measurement.sequence_id).where(
                Measurement.campaign_id == campaign.id)))
            s.add_all(
                Measurement(campaign_id=campaign.id, sequence_id=seqs[t].id, value=(v if ok else None),
                            feasible=bool(ok), source=MeasurementSource.SEED_GA)
                for t, v, ok in zip(texts, values, feasible) if seqs[t].id not in measured
            )
            _upsert_round(s, campaign.id, 0, proposal_metrics=_jsonable(
                {"oracle_calls": int(last.get("oracle_calls", 0)), "seed_sequences": len(texts),
                 "unique_frac": last.get("unique_frac"), "ga": _jsonable(last)}
            ))

        return write

    return compute


def _train(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Callable[[DbReporter], Writer]:
    """LLOME's outer step: feed the labels the loop has not seen, fine-tune, checkpoint."""

    prev = _round_state(session, view.id, c.round - 1) if c.round > 1 else None
    new = _labels(session, view.id, unobserved_only=True)
    workdir = _workdir(rt, c)
    try:  # where the server keeps the starting model (a later round's state names it)
        model_path = model_registry.path_for(session, view.spec.model) if prev is None else None
    except model_registry.ModelGone as exc:
        raise DomainFailure(str(exc)) from None

    def compute(reporter: DbReporter) -> Writer:
        loop = _loop(rt, view, prev, workdir, model_path)
        if new.ids:
            loop.observe(new.labelled(view))
        info = loop.train(reporter)
        state = loop.state_dict()

        def write(s: Session, campaign: Campaign) -> None:
            _mark_observed(s, new.ids, c.round)
            _upsert_round(s, campaign.id, c.round, state=state, checkpoint_path=state.get("checkpoint"),
                          checkpoint_sha256=state.get("checkpoint_sha256"), train_metrics=_jsonable(info))

        return write

    return compute


def _loop(rt: Runtime, view: CampaignView, state: dict[str, Any] | None, workdir: Path,
          model_path: str | None = None) -> Any:
    from llome_core.loop import LlomeLoop

    feasible = None
    oracle = view.spec.oracle
    if isinstance(oracle, EhrlichParams):
        from llome_core.ehrlich import Ehrlich

        # The oracle's hard constraint is known: checkpoint selection also asks for feasible outputs.
        feasible = Ehrlich.from_config(oracle.to_config()).is_feasible
    if state is None:
        return LlomeLoop(view.spec.loop_config(rt.device, model_path), num_states=view.alphabet.size,
                         dim=view.length, workdir=workdir, feasible=feasible)
    # The device is the worker's, not the one that wrote the state (a campaign may move).
    state = {**state, "config": {**state["config"], "device": rt.device}}
    return LlomeLoop.from_state_dict(state, workdir, feasible=feasible)


def _generate_llome(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Callable[[DbReporter], Writer]:
    """LLOME's inner loop and filter: at most batch_size new candidates."""
    state = _round_state(session, view.id, c.round)
    if state is None:
        raise DomainFailure(f"round {c.round} has no trained model state; was its train step lost?")
    known = _known_texts(session, view.id) + list(view.spec.optimizer.exclude)
    measured = _measured_texts(session, view)
    controls = _control_texts(session, view)
    workdir = _workdir(rt, c)

    def compute(reporter: DbReporter) -> Writer:
        loop = _loop(rt, view, state, workdir)
        s = loop.state_dict()
        loop_known = {tuple(r) for r in (s.get("labelled") or {}).get("sequences", [])}
        loop_known |= {tuple(r) for r in s.get("pending", [])} | {tuple(r) for r in s.get("excluded", [])}
        extra = [row for row in view.encode(known).tolist() if tuple(row) not in loop_known]
        if extra:
            loop.exclude(torch.tensor(extra, dtype=torch.long))
        proposal = loop.generate(reporter)
        new_state = loop.state_dict()
        kept, removed, info = _compose(view, proposal.candidates, measured)
        return _batch_writer(view, c, kept, {**proposal.metrics, "composition": info}, new_state,
                             controls=controls)

    return compute


def _generate_ga(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Callable[[DbReporter], Writer]:
    """The GA as the campaign's optimizer: one population per round."""
    from llome_core.config import GAConfig
    from llome_core.ga import GeneticOptimizer

    params = view.spec.optimizer
    assert isinstance(params, GAParams)
    prev = _round_state(session, view.id, c.round - 1) if c.round > 1 else None
    new = _labels(session, view.id, unobserved_only=True)
    everything = _labels(session, view.id, unobserved_only=False) if prev is None else None
    known = _known_texts(session, view.id)
    dropped = _dropped_texts(session, view.id)
    measured = _measured_texts(session, view)
    controls = _control_texts(session, view)

    def compute(reporter: DbReporter) -> Writer:
        if prev is None:
            assert everything is not None
            data = everything.labelled(view)
            order = torch.argsort(data.values + data.feasible.double(), descending=True, stable=True)
            # The population starts from the best labelled sequences (a lab's parents), tiled.
            start = data.sequences[order[: max(1, view.batch_size // 10)]]
            config = GAConfig(num_particles=view.batch_size, mutation_prob=params.mutation_prob,
                              recombine_prob=params.recombine_prob,
                              survival_quantile=params.survival_quantile,
                              seed=derive_seed(view.seed, "ga-optimizer"))
            opt = GeneticOptimizer(config, view.alphabet.size, view.length, start)
        else:
            opt = GeneticOptimizer.from_state_dict(prev)
        if new.ids:
            opt.observe(new.labelled(view))
        if dropped:
            # Withdrawn and expired candidates get no label; the GA waits for a label of every
            # particle, so it is told they failed (after the real labels: the first label wins).
            opt.observe(Labelled(view.encode(dropped), torch.zeros(len(dropped), dtype=torch.float64),
                                 torch.zeros(len(dropped), dtype=torch.bool)))
        proposal = opt.propose(reporter)
        known_set = set(known)
        fresh = [cand for cand in proposal.candidates if view.decode(cand.sequence) not in known_set]
        kept, removed, info = _compose(view, fresh, measured)
        if removed:  # never sent to the lab: the GA is told they failed, so it does not wait on them
            opt.observe(Labelled(torch.tensor([list(r.sequence) for r in removed], dtype=torch.long),
                                 torch.zeros(len(removed), dtype=torch.float64),
                                 torch.zeros(len(removed), dtype=torch.bool)))
        return _batch_writer(view, c, kept, {**proposal.metrics, "composition": info}, opt.state_dict(),
                             observed=new.ids, controls=controls)

    return compute


def _batch_writer(view: CampaignView, c: jobs.Claim, candidates: list[CoreCandidate],
                  metrics: dict[str, Any], state: dict[str, Any], observed: list[int] | None = None,
                  controls: list[str] | None = None) -> Writer:
    texts = [view.decode(cand.sequence) for cand in candidates]
    lineage = [
        (view.decode(cand.parent) if cand.parent is not None else None,
         view.decode(cand.seed) if cand.seed is not None else None,
         cand.refinement_step, cand.temperature, cand.log_likelihood)
        for cand in candidates
    ]
    # Issue 8: why each candidate was proposed, stored once, never recomputed.
    reference = getattr(view.spec.oracle, "reference", None)
    if isinstance(view.spec.optimizer, LlomeParams):
        from llome_core.config import parse_schedule

        objective: str | None = parse_schedule(view.spec.optimizer.objective, view.spec.rounds)[c.round - 1]
        checkpoint_sha256 = state.get("checkpoint_sha256")
    else:  # the GA has no model
        objective = checkpoint_sha256 = None

    def write(s: Session, campaign: Campaign) -> None:
        if observed:
            _mark_observed(s, observed, c.round)
        _upsert_round(s, campaign.id, c.round, state=state, proposal_metrics=_jsonable(
            {**metrics, "proposed": len(texts)}))
        if not texts:
            return  # advance() sees no batch and ends the campaign with a message
        batch = Batch(campaign_id=campaign.id, round=c.round, status=BatchStatus.AWAITING_LABELS,
                      size=len(texts))
        s.add(batch)
        s.flush()
        seqs = _sequences(s, campaign.id, texts)
        s.add_all(
            Candidate(campaign_id=campaign.id, batch_id=batch.id, sequence_id=seqs[t].id, position=i,
                      parent=parent, trajectory_seed=seed, refinement_step=step,
                      temperature=temp, log_likelihood=(ll if ll is None or math.isfinite(ll) else None),
                      objective=objective, checkpoint_sha256=checkpoint_sha256,
                      mutations=mutations(parent, t), reference_mutations=mutations(reference, t))
            for i, (t, (parent, seed, step, temp, ll)) in enumerate(zip(texts, lineage))
        )
        extra = [t for t in dict.fromkeys(controls or []) if t not in set(texts)]
        if extra:  # after the proposals, outside the budget (batch.size counts proposals only)
            ctrl = _sequences(s, campaign.id, extra)
            s.add_all(
                Candidate(campaign_id=campaign.id, batch_id=batch.id, sequence_id=ctrl[t].id,
                          position=len(texts) + i, is_control=True,
                          reference_mutations=mutations(reference, t))
                for i, t in enumerate(extra)
            )

    return write


def _label(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Callable[[DbReporter], Writer]:
    """Ehrlich campaigns: the oracle labels the whole batch at once."""
    from llome_core.ehrlich import Ehrlich

    oracle = view.spec.oracle
    assert isinstance(oracle, EhrlichParams)
    batch = session.scalar(select(Batch).where(Batch.campaign_id == view.id, Batch.round == c.round))
    if batch is None:
        raise DomainFailure(f"round {c.round} has no batch to label")
    rows = session.execute(
        select(Candidate.id, Candidate.sequence_id, Sequence.text)
        .join(Sequence, Sequence.id == Candidate.sequence_id)
        .where(Candidate.batch_id == batch.id).order_by(Candidate.position)
    ).tuples().all()
    batch_id = batch.id

    def compute(reporter: DbReporter) -> Writer:
        reporter("label", 0, len(rows))
        values, feasible = Ehrlich.from_config(oracle.to_config()).evaluate(view.encode([r[2] for r in rows]))
        reporter("label", len(rows), len(rows))

        def write(s: Session, campaign: Campaign) -> None:
            done = set(s.scalars(select(Measurement.candidate_id).where(Measurement.batch_id == batch_id)))
            for (cid, sid, _), v, ok in zip(rows, values.tolist(), feasible.tolist()):
                if cid in done:
                    continue
                s.add(Measurement(campaign_id=campaign.id, sequence_id=sid, candidate_id=cid,
                                  batch_id=batch_id, value=(float(v) if ok else None), feasible=bool(ok),
                                  source=MeasurementSource.ORACLE))
            s.execute(update(Candidate).where(Candidate.batch_id == batch_id)
                      .values(status=CandidateStatus.MEASURED))
            s.execute(update(Batch).where(Batch.id == batch_id)
                      .values(status=BatchStatus.LABELLED, labelled_at=utcnow()))
            s.flush()
            s.expire_all()  # advance() re-reads the batch it just labelled

        return write

    return compute


def _prepare(rt: Runtime, c: jobs.Claim, view: CampaignView, session: Session) -> Callable[[DbReporter], Writer]:
    if c.step == JobStep.SEED:
        return _seed(rt, c, view, session)
    if c.step == JobStep.TRAIN:
        return _train(rt, c, view, session)
    if c.step == JobStep.GENERATE:
        if view.optimizer_kind == OptimizerKind.GA:
            return _generate_ga(rt, c, view, session)
        return _generate_llome(rt, c, view, session)
    if c.step == JobStep.LABEL:
        return _label(rt, c, view, session)
    raise DomainFailure(f"unknown step {c.step!r}")


# --- running a job ------------------------------------------------------------------------


def run_job(rt: Runtime, job_id: int) -> str:
    """Run job ``job_id`` if it can be claimed; returns what happened (for logs and tests)."""
    with session_scope(rt.session_factory) as session:
        claim = jobs.claim(session, job_id, rt.settings.lease_s)
    if claim is None:
        log.info("job %s: already done, cancelled or held by a live worker; nothing to do", job_id)
        return "skipped"
    log.info("job %s: %s of round %s, campaign %s, attempt %s", job_id, claim.step, claim.round,
             claim.campaign_id, claim.attempt)
    try:
        with Heartbeat(rt, claim) as beat:
            with rt.session_factory() as session:  # a read-only snapshot, closed before compute
                campaign = session.get(Campaign, claim.campaign_id)
                assert campaign is not None
                if campaign.status in TERMINAL_CAMPAIGN or campaign.status == CampaignStatus.PAUSED:
                    raise Cancelled(f"the campaign is {campaign.status}")
                compute = _prepare(rt, claim, CampaignView.of(campaign), session)
            write = compute(DbReporter(rt, claim, beat))
        return _commit(rt, claim, write)
    except Cancelled as exc:
        log.info("job %s stopped: %s", job_id, exc)
        _give_back(rt, claim)
        return "cancelled"
    except _domain_errors() as exc:
        log.info("job %s failed: %s", job_id, exc)
        _fail(rt, claim, str(exc))
        return "failed"
    except TRANSIENT_ERRORS:
        log.warning("job %s: transient database error; giving the job back", job_id, exc_info=True)
        try:
            _give_back(rt, claim)
        except Exception:  # the lease runs out and recovery re-sends it
            log.warning("job %s: could not give it back", job_id, exc_info=True)
        raise
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        _fail(rt, claim, f"internal error in the {claim.step} step of round {claim.round}: "
                         f"{exc.__class__.__name__}: {exc}")
        return "failed"


def _commit(rt: Runtime, c: jobs.Claim, write: Writer) -> str:
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, c.campaign_id, lock=True)
        job = jobs.owned(session, c, lock=True)
        if job is None:
            log.info("job %s attempt %s lost its claim; its results are discarded", c.job_id, c.attempt)
            return "superseded"
        if campaign.status in TERMINAL_CAMPAIGN:
            job.status, job.lease_until, job.finished_at = JobStatus.CANCELLED, None, utcnow()
            return "cancelled"
        write(session, campaign)
        job.status = JobStatus.SUCCEEDED
        job.lease_until = None
        job.finished_at = utcnow()
        if job.progress_total is not None:
            job.progress_step = job.progress_total
        session.flush()
        campaign_service.advance(session, campaign)
    return "succeeded"


def _give_back(rt: Runtime, c: jobs.Claim) -> None:
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, c.campaign_id, lock=True)
        job = jobs.owned(session, c, lock=True)
        if job is None:
            return
        if campaign.status in TERMINAL_CAMPAIGN:
            job.status, job.lease_until, job.finished_at = JobStatus.CANCELLED, None, utcnow()
        else:
            jobs.release(session, c)


def _fail(rt: Runtime, c: jobs.Claim, message: str) -> None:
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, c.campaign_id, lock=True)
        job = jobs.owned(session, c, lock=True)
        if job is None:
            return
        job.status, job.error, job.lease_until, job.finished_at = JobStatus.FAILED, message, None, utcnow()
        campaign_service.fail(session, campaign, message)


# --- orchestration entry points -----------------------------------------------------------


def advance(rt: Runtime, campaign_id: int) -> None:
    """The ``llome.advance_campaign`` task: move the campaign as far as its rows allow."""
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, campaign_id, lock=True)
        campaign_service.advance(session, campaign, settings=rt.settings)


def recover(rt: Runtime, *, resend_queued: bool = False) -> int:
    """Re-send work whose message is presumed lost (expired leases, messages never picked up);
    ``resend_queued`` re-sends every queued job (the in-memory broker lost them at a restart).
    Returns how many campaigns were looked at."""
    with rt.session_factory() as session:
        ids = campaign_service.active_ids(session)
    for cid in ids:
        try:
            with session_scope(rt.session_factory) as session:
                campaign = campaign_service.get_or_404(session, cid, lock=True)
                expire_overdue(session, campaign)  # candidates past the campaign's label_ttl
                campaign_service.advance(session, campaign, resend_queued=resend_queued, settings=rt.settings)
        except Exception:
            log.warning("recovery of campaign %s failed; next sweep retries", cid, exc_info=True)
    return len(ids)
