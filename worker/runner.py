"""The job runner: claim a job, run its step, write its results, or give it back or fail it; and
the orchestration entry points (advance a campaign, recover lost work).

Each step runs as: claim (one UPDATE) -> read a snapshot (short transaction) -> compute with no
transaction open -> write everything in one transaction that first checks the claim still holds
(the ``attempt`` fence), then marks the job done and advances the campaign. A duplicate delivery
finds the job done and returns; a stale worker's late write is discarded.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from api.db import session_scope, utcnow
from api.models import TERMINAL_CAMPAIGN, Campaign, CampaignStatus, JobStatus
from api.services import campaigns as campaign_service
from api.services import jobs
from api.services.candidates import expire_overdue
from llome_core.progress import Cancelled
from worker import notify, steps
from worker.accounting import StepClock, StepCost
from worker.reporting import DbReporter, Heartbeat
from worker.rows import CampaignView
from worker.runtime import Runtime
from worker.steps import DOMAIN_ERRORS, Writer

log = logging.getLogger("llome.worker")

# Transient: the database went away for a moment. The job is given back and Celery retries.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DBAPIError,)


def run_job(rt: Runtime, job_id: int) -> str:
    """Run job ``job_id`` if it can be claimed; returns what happened (for logs and tests)."""
    with session_scope(rt.session_factory) as session:
        claim = jobs.claim(session, job_id, rt.settings.lease_s)
    if claim is None:
        log.info("job %s: already done, cancelled or held by a live worker; nothing to do", job_id)
        return "skipped"
    log.info(
        "job %s: %s of round %s, campaign %s, attempt %s",
        job_id,
        claim.step,
        claim.round,
        claim.campaign_id,
        claim.attempt,
    )
    try:
        with Heartbeat(rt, claim) as beat:
            with rt.session_factory() as session:  # a read-only snapshot, closed before compute
                campaign = session.get(Campaign, claim.campaign_id)
                assert campaign is not None
                if campaign.status in TERMINAL_CAMPAIGN or campaign.status == CampaignStatus.PAUSED:
                    raise Cancelled(f"the campaign is {campaign.status}")
                compute = steps.prepare(rt, claim, CampaignView.of(campaign), session)
            with StepClock(rt.device) as clock:
                write = compute(DbReporter(rt, claim, beat))
        return commit(rt, claim, write, clock.cost)
    except Cancelled as exc:
        log.info("job %s stopped: %s", job_id, exc)
        give_back(rt, claim)
        return "cancelled"
    except DOMAIN_ERRORS as exc:
        log.info("job %s failed: %s", job_id, exc)
        fail(rt, claim, str(exc))
        return "failed"
    except TRANSIENT_ERRORS:
        log.warning("job %s: transient database error; giving the job back", job_id, exc_info=True)
        try:
            give_back(rt, claim)
        except Exception:  # the lease runs out and recovery re-sends it
            log.warning("job %s: could not give it back", job_id, exc_info=True)
        raise
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        fail(
            rt,
            claim,
            f"internal error in the {claim.step} step of round {claim.round}: "
            f"{exc.__class__.__name__}: {exc}",
        )
        return "failed"


def commit(rt: Runtime, c: jobs.Claim, write: Writer, cost: StepCost | None = None) -> str:
    """Write a step's results, mark its job done and advance the campaign, in one transaction,
    if the claim still holds; returns "succeeded", "superseded" or "cancelled"."""
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, c.campaign_id, lock=True)
        job = jobs.owned(session, c, lock=True)
        if job is None:
            log.info(
                "job %s attempt %s lost its claim; its results are discarded", c.job_id, c.attempt
            )
            return "superseded"
        if campaign.status in TERMINAL_CAMPAIGN:
            job.status, job.lease_until, job.finished_at = JobStatus.CANCELLED, None, utcnow()
            return "cancelled"
        write(session, campaign)
        job.status = JobStatus.SUCCEEDED
        job.lease_until = None
        job.finished_at = utcnow()
        if cost is not None:
            job.wall_seconds, job.cpu_seconds, job.gpu_seconds = cost.wall_s, cost.cpu_s, cost.gpu_s
        if job.progress_total is not None:
            job.progress_step = job.progress_total
        session.flush()
        campaign_service.advance(session, campaign)
    return "succeeded"


def give_back(rt: Runtime, c: jobs.Claim) -> None:
    """Release a claimed job to the queue (cancelled with its campaign if that has ended)."""
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, c.campaign_id, lock=True)
        job = jobs.owned(session, c, lock=True)
        if job is None:
            return
        if campaign.status in TERMINAL_CAMPAIGN:
            job.status, job.lease_until, job.finished_at = JobStatus.CANCELLED, None, utcnow()
        else:
            jobs.release(session, c)


def fail(rt: Runtime, c: jobs.Claim, message: str) -> None:
    """Fail the job and its campaign with ``message`` (no retry)."""
    with session_scope(rt.session_factory) as session:
        campaign = campaign_service.get_or_404(session, c.campaign_id, lock=True)
        job = jobs.owned(session, c, lock=True)
        if job is None:
            return
        job.status, job.error, job.lease_until, job.finished_at = (
            JobStatus.FAILED,
            message,
            None,
            utcnow(),
        )
        campaign_service.fail(session, campaign, message)


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
                campaign_service.advance(
                    session, campaign, resend_queued=resend_queued, settings=rt.settings
                )
        except Exception:
            log.warning("recovery of campaign %s failed; next sweep retries", cid, exc_info=True)
    try:
        notify.resend_overdue(rt, everything=resend_queued)
    except Exception:
        log.warning("recovery of webhook deliveries failed; next sweep retries", exc_info=True)
    return len(ids)
