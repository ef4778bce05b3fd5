"""Candidates in the lab: lineage, withdraw, release a batch, and the batch as lab-ready files."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from api.clock import NowDep
from api.deps import CampaignDep, LockedCampaignDep, SessionDep
from api.models import Candidate
from api.routes import file_response
from api.schemas.candidates import CandidateDetail, ReleaseRead
from api.schemas.common import PROBLEM_RESPONSES
from api.services import batches as batch_service
from api.services import candidates as service

router = APIRouter(prefix="/campaigns", tags=["candidates"], responses=PROBLEM_RESPONSES)


@router.get("/{campaign_id}/candidates/{candidate_id}", response_model=CandidateDetail)
def get_candidate(campaign: CampaignDep, candidate_id: int, session: SessionDep) -> CandidateDetail:
    """A candidate, its lab status and why it was proposed (round, parent, trajectory seed,
    refinement step, objective, checkpoint, temperature, log-likelihood, mutations)."""
    return service.detail(session, campaign, service.get_or_404(session, campaign, candidate_id))


@router.post("/{campaign_id}/candidates/{candidate_id}/withdraw", response_model=CandidateDetail)
def withdraw_candidate(
    campaign: LockedCampaignDep, candidate_id: int, session: SessionDep, now: NowDep
) -> CandidateDetail:
    """Take the candidate out of the lab for good (409 from a final state); it is never proposed
    again. A batch with nothing left pending is labelled and the loop moves on."""
    service.expire_overdue(session, campaign, now)
    cand = service.get_or_404(session, campaign, candidate_id)
    service.withdraw(session, campaign, cand, now)
    return service.detail(session, campaign, cand)


@router.post("/{campaign_id}/batches/{batch_id}/release", response_model=ReleaseRead)
def release_batch(
    campaign: LockedCampaignDep, batch_id: int, session: SessionDep, now: NowDep
) -> ReleaseRead:
    """Mark the batch ordered: its proposed (and assay_failed) candidates become released."""
    service.expire_overdue(session, campaign, now)
    batch = batch_service.get_or_404(session, campaign, batch_id)
    n = service.release(session, campaign, batch, now)
    counts = dict(
        session.execute(
            select(Candidate.status, func.count())
            .where(Candidate.batch_id == batch.id)
            .group_by(Candidate.status)
        )
        .tuples()
        .all()
    )
    return ReleaseRead(batch_id=batch.id, released=n, status_counts=counts)


@router.get(
    "/{campaign_id}/batches/{batch_id}/template.csv",
    response_class=Response,
    responses=file_response("text/csv", description="the results template as CSV"),
)
def get_batch_template(
    campaign: CampaignDep, batch_id: int, session: SessionDep
) -> StreamingResponse:
    """``candidate_id,sequence,mutant,score,status`` for every candidate still in the lab: fill in
    score (and status: measured, failed_expression, assay_failed) and upload it unchanged in shape."""
    batch = batch_service.get_or_404(session, campaign, batch_id)
    return StreamingResponse(
        service.template_csv(session, campaign, batch),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}-batch-{batch.id}-template.csv"'
        },
    )


@router.get(
    "/{campaign_id}/batches/{batch_id}/fasta",
    response_class=PlainTextResponse,
    responses=file_response("text/x-fasta", description="the batch as FASTA"),
)
def get_batch_fasta(campaign: CampaignDep, batch_id: int, session: SessionDep) -> PlainTextResponse:
    """The batch as FASTA; each header is the candidate id."""
    batch = batch_service.get_or_404(session, campaign, batch_id)
    return PlainTextResponse(
        service.fasta(session, batch),
        media_type="text/x-fasta",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}-batch-{batch.id}.fasta"'
        },
    )


class ExpireRead(BaseModel):
    expired: int = Field(description="candidates that expired now")
    campaign_status: str


@router.post("/{campaign_id}/expire", response_model=ExpireRead)
def expire_candidates(campaign: LockedCampaignDep, session: SessionDep, now: NowDep) -> ExpireRead:
    """Apply the campaign's ``label_ttl`` now (the worker's recovery sweep also does, every
    ``recovery_interval_s``): candidates still in the lab past it become expired, and a batch
    with nothing left pending moves the loop on."""
    n = service.expire_overdue(session, campaign, now)
    return ExpireRead(expired=n, campaign_status=campaign.status)
