"""Campaigns: create, read, list, pause/resume/cancel, and the state machine (``advance``).

A campaign is a state machine in rows. ``advance`` runs with the campaign row locked, looks at
the jobs and batch of the current round, and creates the next job (unique per campaign, round and
step) or moves the status; tasks are sent only after the transaction commits. Every status
change is also a ``campaign_event`` row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.config import Settings
from api.db import utcnow
from api.errors import CampaignNotFound, InvalidState
from api.models import (
    TERMINAL_CAMPAIGN,
    Batch,
    BatchStatus,
    Campaign,
    CampaignEvent,
    CampaignStatus,
    Job,
    JobStatus,
    JobStep,
    Measurement,
    OptimizerKind,
    OracleKind,
)
from api.schemas.campaigns import CampaignCreate, CampaignRead, EhrlichParams, StopParams
from api.schemas.common import Progress
from api.services import jobs, notifications, paging
from llome_core.stopping import RoundRecord, stop_reason

STATUS_OF_STEP = {
    JobStep.SEED: CampaignStatus.SEEDING,
    JobStep.TRAIN: CampaignStatus.TRAINING,
    JobStep.GENERATE: CampaignStatus.GENERATING,
    JobStep.LABEL: CampaignStatus.LABELLING,
}
WAITING_FOR_SEED = (
    "waiting for seed data: upload a CSV with columns sequence,score (optional feasible) to "
    "POST /campaigns/{id}/measurements"
)
WAITING_FOR_LABELS = (
    "waiting for the lab: upload the results of batch {batch_id} (columns candidate_id or "
    "sequence, score, optional feasible) to POST /campaigns/{id}/batches/{batch_id}/results"
)


# --- create / read ------------------------------------------------------------------------


def create(
    session: Session, *, data: CampaignCreate, lab_id: int, settings: Settings | None = None
) -> Campaign:
    """Insert the campaign for lab ``lab_id`` and start it (an Ehrlich campaign starts seeding
    at once). With ``settings``, a ``notify_url`` outside the allowed hosts is a 422."""
    if settings is not None:
        notifications.check_url(data.notify_url, settings)
    from api.services import models as model_registry

    data = data.model_copy(
        update={"model": model_registry.resolve_for_campaign(session, data.model, lab_id)}
    )
    oracle = data.oracle
    if isinstance(oracle, EhrlichParams):
        alphabet, length = oracle.alphabet().letters, oracle.dim
    else:
        alphabet, length = oracle.alphabet, oracle.length
    campaign = Campaign(
        lab_id=lab_id,
        name=data.name,
        status=CampaignStatus.CREATED,
        oracle_kind=oracle.kind,
        optimizer_kind=data.optimizer.kind,
        alphabet=alphabet,
        length=length,
        batch_size=data.batch_size,
        rounds=data.rounds,
        seed=data.seed,
        spec=data.model_dump(mode="json"),
        round=0,
        notify_secret=notifications.new_secret() if data.notify_url else None,
    )
    session.add(campaign)
    session.flush()
    _event(session, campaign, "created", None, CampaignStatus.CREATED)
    advance(session, campaign)
    return campaign


def spec_of(campaign: Campaign) -> CampaignCreate:
    """The validated request the campaign was created with."""
    return CampaignCreate.model_validate(campaign.spec)


def get_or_404(
    session: Session, campaign_id: int, *, lock: bool = False, lab_id: int | None = None
) -> Campaign:
    """The campaign; with ``lab_id`` (every API request) only that lab's, so another lab's
    campaign is the same 404 as a missing one. Workers pass no lab."""
    q = select(Campaign).where(Campaign.id == campaign_id)
    if lab_id is not None:
        q = q.where(Campaign.lab_id == lab_id)
    if lock:
        # One row lock per campaign serializes its writers (uploads, steps, pause) without
        # locking candidates or measurements (Optuna's deadlock lesson).
        q = q.with_for_update()
    campaign = session.scalar(q)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    return campaign


def list_(
    session: Session, *, lab_id: int, cursor: int | None, limit: int
) -> tuple[list[Campaign], int | None]:
    """The lab's campaigns, newest first; the cursor is the last id seen."""
    return paging.keyset(
        session,
        select(Campaign).where(Campaign.lab_id == lab_id),
        Campaign.id,
        cursor=cursor,
        limit=limit,
        newest_first=True,
    )


def current_job(session: Session, campaign: Campaign) -> Job | None:
    return session.scalar(
        select(Job).where(Job.campaign_id == campaign.id).order_by(Job.id.desc()).limit(1)
    )


def progress(session: Session, campaign: Campaign, now: datetime | None = None) -> Progress:
    """Phase, step, percent and ETA of the running step; the waiting message otherwise."""
    now = now or utcnow()
    p = Progress(round=campaign.round, rounds=campaign.rounds, message=campaign.message)
    # Finished, or waiting for the lab (a round's steps are all done before it waits): no step
    # runs, so no query (labs poll campaigns in this state most).
    if campaign.status in TERMINAL_CAMPAIGN or campaign.status == CampaignStatus.AWAITING_LABELS:
        return p
    job = current_job(session, campaign)
    if job is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        return p
    p.phase = job.phase or (f"{job.step} queued" if job.status == JobStatus.QUEUED else job.step)
    p.step, p.total = job.progress_step, job.progress_total
    if p.step is not None and p.total:
        p.percent = round(100.0 * p.step / p.total, 1)
        if p.step > 0 and job.phase_started_at is not None:
            elapsed = (now - job.phase_started_at).total_seconds()
            p.eta_s = round(max(0.0, elapsed / p.step * (p.total - p.step)), 1)
    return p


def to_read(session: Session, campaign: Campaign, *, with_secret: bool = False) -> CampaignRead:
    """The campaign as the API shows it; ``with_secret`` (the creation response only) adds the
    webhook signing key."""
    spec = campaign.spec
    return CampaignRead(
        id=campaign.id,
        name=campaign.name,
        status=campaign.status,
        round=campaign.round,
        rounds=campaign.rounds,
        batch_size=campaign.batch_size,
        seed=campaign.seed,
        alphabet=campaign.alphabet,
        length=campaign.length,
        oracle=spec["oracle"],
        optimizer=spec["optimizer"],
        model=spec["model"],
        progress=progress(session, campaign),
        error=campaign.error,
        stop=spec.get("stop"),
        stop_reason=campaign.stop_reason,
        notify_url=spec.get("notify_url"),
        notify_events=spec.get("notify_events"),
        notify_secret=campaign.notify_secret if with_secret else None,
        twin_of=campaign.twin_of_id,
        created_at=campaign.created_at,
        updated_at=campaign.updated_at,
    )


# --- status changes -----------------------------------------------------------------------


_RESUMING = "llome_resuming"  # session.info: the campaign whose next status event is its resume


def _event(
    session: Session,
    campaign: Campaign,
    kind: str,
    old: str | None,
    new: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    if old == CampaignStatus.CREATED and session.info.get(_RESUMING) == campaign.id:
        # resume() passes through "created" only for advance() to work out where the campaign
        # stands: the move that happened is paused -> new.
        del session.info[_RESUMING]
        kind, old = "resumed", CampaignStatus.PAUSED
    session.add(
        CampaignEvent(
            campaign_id=campaign.id, kind=kind, from_status=old, to_status=new, detail=detail
        )
    )


def set_status(
    session: Session,
    campaign: Campaign,
    status: CampaignStatus,
    *,
    kind: str = "status",
    message: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Move the campaign (a terminal status never changes again) and log the event."""
    old = campaign.status
    if old in TERMINAL_CAMPAIGN and status != old:
        raise InvalidState(f"campaign {campaign.id} is {old}; it cannot become {status}")
    campaign.message = message
    if old != status:
        campaign.status = status
        campaign.updated_at = utcnow()
        _event(session, campaign, kind, old, status, detail)
        if status in (CampaignStatus.COMPLETED, CampaignStatus.FAILED):
            notifications.emit(session, campaign, str(status))


def fail(session: Session, campaign: Campaign, error: str) -> None:
    """A domain failure: the campaign stops with a plain-words ``error``."""
    if campaign.status in TERMINAL_CAMPAIGN:
        return
    campaign.error = error
    set_status(session, campaign, CampaignStatus.FAILED, detail={"error": error})


def pause(session: Session, campaign: Campaign) -> None:
    if campaign.status in TERMINAL_CAMPAIGN:
        raise InvalidState(f"campaign {campaign.id} is {campaign.status}: nothing to pause")
    # A running step notices at its next progress report and gives its job back.
    set_status(session, campaign, CampaignStatus.PAUSED, kind="paused")


def resume(session: Session, campaign: Campaign) -> None:
    if campaign.status != CampaignStatus.PAUSED:
        raise InvalidState(f"campaign {campaign.id} is {campaign.status}, not paused")
    # advance() works out where the campaign stands; the log records the one paused -> X move.
    campaign.status = CampaignStatus.CREATED
    session.info[_RESUMING] = campaign.id
    try:
        advance(session, campaign, resend_queued=True)
    finally:
        unlogged = session.info.pop(_RESUMING, None) is not None
    if unlogged:  # it stays where it waits ("created": for seed data)
        _event(session, campaign, "resumed", CampaignStatus.PAUSED, campaign.status)


def cancel(session: Session, campaign: Campaign) -> None:
    if campaign.status in TERMINAL_CAMPAIGN:
        raise InvalidState(f"campaign {campaign.id} is already {campaign.status}")
    set_status(session, campaign, CampaignStatus.CANCELLED, kind="cancelled")
    session.execute(
        update(Job)
        .where(
            Job.campaign_id == campaign.id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
        )
        .values(status=JobStatus.CANCELLED, lease_until=None, finished_at=utcnow())
    )


# --- the state machine --------------------------------------------------------------------


def advance(
    session: Session,
    campaign: Campaign,
    *,
    resend_queued: bool = False,
    settings: Settings | None = None,
) -> None:
    """Move the campaign as far as its rows allow; the caller holds the campaign row lock.

    ``resend_queued``: send the current job again if it is queued (resume). ``settings``: also
    re-send a job whose message is presumed lost (the recovery sweep).
    """
    if campaign.status in TERMINAL_CAMPAIGN or campaign.status == CampaignStatus.PAUSED:
        return
    ehrlich = campaign.oracle_kind == OracleKind.EHRLICH
    while True:
        r = campaign.round
        if r == 0:
            if ehrlich:
                job = _step(session, campaign, 0, JobStep.SEED, resend_queued, settings)
                if job is None:
                    return
            elif not _has_measurements(session, campaign):
                set_status(
                    session,
                    campaign,
                    CampaignStatus.CREATED,
                    message=WAITING_FOR_SEED.format(id=campaign.id),
                )
                return
            campaign.round = 1
            continue
        if campaign.optimizer_kind == OptimizerKind.LLOME and (
            _step(session, campaign, r, JobStep.TRAIN, resend_queued, settings) is None
        ):
            return
        if _step(session, campaign, r, JobStep.GENERATE, resend_queued, settings) is None:
            return
        batch = session.scalar(
            select(Batch).where(Batch.campaign_id == campaign.id, Batch.round == r)
        )
        if batch is None:  # a generate step that proposed nothing new: nothing left to try
            set_status(
                session,
                campaign,
                CampaignStatus.COMPLETED,
                message=f"round {r} proposed no new sequence; the campaign stopped",
            )
            return
        if batch.status != BatchStatus.LABELLED:
            if not ehrlich:
                set_status(
                    session,
                    campaign,
                    CampaignStatus.AWAITING_LABELS,
                    message=WAITING_FOR_LABELS.format(id=campaign.id, batch_id=batch.id),
                )
                notifications.emit(session, campaign, "batch_ready", batch_id=batch.id)
                return
            if _step(session, campaign, r, JobStep.LABEL, resend_queued, settings) is None:
                return
            if batch.status != BatchStatus.LABELLED:  # the label step commits both together
                fail(
                    session,
                    campaign,
                    f"internal error: round {r}'s label step succeeded "
                    "but its batch is not labelled",
                )
                return
        if ehrlich and _optimum_found(session, campaign):
            set_status(
                session,
                campaign,
                CampaignStatus.COMPLETED,
                message=f"the optimum (score 1) was found by round {r}",
            )
            return
        if (reason := _stop_reason(session, campaign, r)) is not None:
            campaign.stop_reason = reason
            set_status(
                session,
                campaign,
                CampaignStatus.COMPLETED,
                kind="stopped",
                message=reason,
                detail={"stop_reason": reason},
            )
            return
        if r >= campaign.rounds:
            set_status(
                session,
                campaign,
                CampaignStatus.COMPLETED,
                message=f"all {campaign.rounds} rounds done",
            )
            return
        campaign.round = r + 1


def _step(
    session: Session,
    campaign: Campaign,
    r: int,
    step: JobStep,
    resend_queued: bool,
    settings: Settings | None,
) -> Job | None:
    """The succeeded job of this step, or None after making sure it is queued or running."""
    job = jobs.get_job(session, campaign.id, r, step)
    if job is not None and job.status == JobStatus.SUCCEEDED:
        return job
    if job is None:
        job = jobs.create_job(session, campaign.id, r, step)
    elif (
        job.status == JobStatus.QUEUED
        and resend_queued
        or settings is not None
        and jobs.needs_resend(job, utcnow(), settings)
    ):
        jobs.send_job(session, job)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        set_status(session, campaign, STATUS_OF_STEP[JobStep(step)])
    return None


def _stop_reason(session: Session, campaign: Campaign, r: int) -> str | None:
    """The stop rule that fires after labelled round ``r`` (``llome_core.stopping``), if any."""
    rule = StopParams.model_validate(campaign.spec.get("stop") or {}).to_rule()
    if not rule.active:
        return None
    from api.services import metrics

    history = [
        RoundRecord(m.round, m.best_score, m.oracle_calls)
        for m in metrics.compute(session, campaign).rounds
        if m.round <= r
    ]
    return stop_reason(rule, history, next_batch=campaign.batch_size if r < campaign.rounds else 0)


def _has_measurements(session: Session, campaign: Campaign) -> bool:
    return (
        session.scalar(
            select(Measurement.id).where(Measurement.campaign_id == campaign.id).limit(1)
        )
        is not None
    )


def _optimum_found(session: Session, campaign: Campaign) -> bool:
    best = session.scalar(
        select(func.max(Measurement.value)).where(
            Measurement.campaign_id == campaign.id,
            Measurement.feasible.is_(True),
            Measurement.superseded_at.is_(None),
        )
    )
    return best is not None and best >= 1.0


def active_ids(session: Session) -> list[int]:
    """Campaigns that may have work to do (the recovery sweep looks at these)."""
    skip = list(TERMINAL_CAMPAIGN) + [CampaignStatus.PAUSED]
    return list(session.scalars(select(Campaign.id).where(Campaign.status.not_in(skip))))
