"""Batches: list, get, candidates as rows for JSON and CSV."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from api.errors import BatchNotFound
from api.models import PENDING_CANDIDATE, Batch, Campaign, Candidate, Measurement, Sequence
from api.schemas.batches import BatchRead, BatchSummary, CandidateRead
from api.services import paging

CSV_COLUMNS = ["candidate_id", "sequence", "score", "feasible"]


# The polled queries are built once (building a statement costs more Python than running it).
_BATCH = select(Batch).where(
    Batch.id == bindparam("batch_id"), Batch.campaign_id == bindparam("campaign_id")
)
_CANDIDATES = (
    select(
        Candidate.id,
        Sequence.text,
        Candidate.status,
        Measurement.value,
        Measurement.feasible,
        Candidate.parent,
        Candidate.trajectory_seed,
        Candidate.refinement_step,
        Candidate.temperature,
        Candidate.log_likelihood,
        Candidate.is_control,
        Candidate.control_score,
    )
    .join(Sequence, Sequence.id == Candidate.sequence_id)
    .outerjoin(
        Measurement,
        (Measurement.candidate_id == Candidate.id) & Measurement.superseded_at.is_(None),
    )
    .where(Candidate.batch_id == bindparam("batch_id"))
    .order_by(Candidate.position)
)


def get_or_404(session: Session, campaign: Campaign, batch_id: int) -> Batch:
    batch = session.scalar(_BATCH, {"batch_id": batch_id, "campaign_id": campaign.id})
    if batch is None:
        raise BatchNotFound(campaign.id, batch_id)
    return batch


def _remaining(session: Session, batch_ids: list[int]) -> dict[int, int]:
    if not batch_ids:
        return {}
    rows = (
        session.execute(
            select(Candidate.batch_id, func.count())
            .where(Candidate.batch_id.in_(batch_ids), Candidate.status.in_(list(PENDING_CANDIDATE)))
            .group_by(Candidate.batch_id)
        )
        .tuples()
        .all()
    )
    return dict(rows)


def summary(batch: Batch, remaining: int) -> BatchSummary:
    return BatchSummary(
        id=batch.id,
        campaign_id=batch.campaign_id,
        round=batch.round,
        status=batch.status,
        size=batch.size,
        remaining=remaining,
        created_at=batch.created_at,
        labelled_at=batch.labelled_at,
    )


def list_(
    session: Session, campaign: Campaign, *, cursor: int | None, limit: int
) -> tuple[list[BatchSummary], int | None]:
    """Newest first; the cursor is the last batch id seen."""
    batches, next_cursor = paging.keyset(
        session,
        select(Batch).where(Batch.campaign_id == campaign.id),
        Batch.id,
        cursor=cursor,
        limit=limit,
        newest_first=True,
    )
    remaining = _remaining(session, [b.id for b in batches])
    return [summary(b, remaining.get(b.id, 0)) for b in batches], next_cursor


def candidates(session: Session, batch: Batch) -> list[CandidateRead]:
    # Columns, not ORM objects: polled often, and nothing here is changed.
    rows = session.execute(_CANDIDATES, {"batch_id": batch.id}).tuples().all()
    return [
        CandidateRead(
            candidate_id=cid,
            sequence=text,
            status=status,
            score=value,
            feasible=feasible,
            parent=parent,
            trajectory_seed=seed,
            refinement_step=step,
            temperature=temperature,
            log_likelihood=ll,
            is_control=bool(is_control),
            control_score=control_score,
        )
        for (
            cid,
            text,
            status,
            value,
            feasible,
            parent,
            seed,
            step,
            temperature,
            ll,
            is_control,
            control_score,
        ) in rows
    ]


def read(session: Session, batch: Batch) -> BatchRead:
    cands = candidates(session, batch)
    remaining = sum(1 for c in cands if c.status in PENDING_CANDIDATE)
    return BatchRead(**summary(batch, remaining).model_dump(), candidates=cands)
