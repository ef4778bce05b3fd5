"""Batches: list, get, candidates as rows for JSON and CSV."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import BatchNotFound
from api.models import PENDING_CANDIDATE, Batch, Campaign, Candidate, Measurement, Sequence
from api.schemas.batches import BatchRead, BatchSummary, CandidateRead

CSV_COLUMNS = ["candidate_id", "sequence", "score", "feasible"]


def get_or_404(session: Session, campaign: Campaign, batch_id: int) -> Batch:
    batch = session.scalar(select(Batch).where(Batch.id == batch_id, Batch.campaign_id == campaign.id))
    if batch is None:
        raise BatchNotFound(campaign.id, batch_id)
    return batch


def _remaining(session: Session, batch_ids: list[int]) -> dict[int, int]:
    if not batch_ids:
        return {}
    rows = session.execute(
        select(Candidate.batch_id, func.count())
        .where(Candidate.batch_id.in_(batch_ids), Candidate.status.in_(list(PENDING_CANDIDATE)))
        .group_by(Candidate.batch_id)
    ).tuples().all()
    return dict(rows)


def summary(batch: Batch, remaining: int) -> BatchSummary:
    return BatchSummary(
        id=batch.id, campaign_id=batch.campaign_id, round=batch.round, status=batch.status,
        size=batch.size, remaining=remaining, created_at=batch.created_at, labelled_at=batch.labelled_at,
    )


def list_(session: Session, campaign: Campaign, *, cursor: int | None, limit: int) -> tuple[list[BatchSummary], int | None]:
    """Newest first; the cursor is the last batch id seen."""
    q = select(Batch).where(Batch.campaign_id == campaign.id).order_by(Batch.id.desc()).limit(limit + 1)
    if cursor is not None:
        q = q.where(Batch.id < cursor)
    batches = list(session.scalars(q))
    more = len(batches) > limit
    batches = batches[:limit]
    remaining = _remaining(session, [b.id for b in batches])
    return [summary(b, remaining.get(b.id, 0)) for b in batches], (batches[-1].id if more and batches else None)


def candidates(session: Session, batch: Batch) -> list[CandidateRead]:
    rows = session.execute(
        select(Candidate, Sequence.text, Measurement.value, Measurement.feasible)
        .join(Sequence, Sequence.id == Candidate.sequence_id)
        .outerjoin(Measurement, (Measurement.candidate_id == Candidate.id)
                   & Measurement.superseded_at.is_(None))
        .where(Candidate.batch_id == batch.id)
        .order_by(Candidate.position)
    ).tuples().all()
    return [
        CandidateRead(
            candidate_id=c.id, sequence=text, status=c.status, score=value, feasible=feasible,
            parent=c.parent, trajectory_seed=c.trajectory_seed, refinement_step=c.refinement_step,
            temperature=c.temperature, log_likelihood=c.log_likelihood,
            is_control=bool(c.is_control), control_score=c.control_score,
        )
        for c, text, value, feasible in rows
    ]


def read(session: Session, batch: Batch) -> BatchRead:
    cands = candidates(session, batch)
    remaining = sum(1 for c in cands if c.status in PENDING_CANDIDATE)
    return BatchRead(**summary(batch, remaining).model_dump(), candidates=cands)
