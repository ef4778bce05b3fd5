"""Candidates as molecules in a lab: lab states with enforced moves, release and
withdraw, expiry after the campaign's ``label_ttl``, lineage, and the batch as lab-ready files.

A batch waits while any of its candidates is pending (``proposed``, ``released``,
``assay_failed``); when none is, it is labelled and the loop moves on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.csvio import write_rows
from api.db import utcnow
from api.errors import BatchNotAwaitingLabels, InvalidState, NotFound
from api.models import (
    CANDIDATE_MOVES,
    PENDING_CANDIDATE,
    Batch,
    BatchStatus,
    Campaign,
    Candidate,
    CandidateStatus,
    Measurement,
    OracleKind,
    Sequence,
)
from api.notation import parse_ttl
from api.schemas.candidates import CandidateDetail
from api.services import campaigns as campaign_service
from api.services import notifications
from llome_core import replicates

TEMPLATE_COLUMNS = ["candidate_id", "sequence", "mutant", "score", "status"]


def reference_of(campaign: Campaign) -> str | None:
    return (campaign.spec.get("oracle") or {}).get("reference")


def template_mutant(candidate: Candidate, versus_reference: bool) -> str:
    """The candidate's mutations as its template row names them: against the campaign's
    reference when it has one, else against the candidate's parent ("" when none)."""
    return (candidate.reference_mutations if versus_reference else candidate.mutations) or ""


def ttl_of(campaign: Campaign) -> timedelta | None:
    ttl = (campaign.spec.get("oracle") or {}).get("label_ttl")
    return parse_ttl(ttl) if ttl else None


# --- states --------------------------------------------------------------------------------------


def move(candidate: Candidate, to: CandidateStatus, now: datetime) -> None:
    """Move ``candidate`` to ``to``; 409 when the move is not allowed (a terminal state never changes)."""
    if to not in CANDIDATE_MOVES.get(candidate.status, frozenset()):
        raise InvalidState(
            f"candidate {candidate.id} is {candidate.status}; it cannot become {to}"
            + ("" if candidate.status in CANDIDATE_MOVES else " (a final state)")
        )
    candidate.status = to
    candidate.status_changed_at = now
    if to == CandidateStatus.RELEASED:
        candidate.released_at = now


def pending_count(session: Session, batch: Batch) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Candidate)
            .where(Candidate.batch_id == batch.id, Candidate.status.in_(list(PENDING_CANDIDATE)))
        )
        or 0
    )


def settle_batch(session: Session, campaign: Campaign, batch: Batch, now: datetime) -> bool:
    """Label ``batch`` and move the campaign on when no candidate is pending; True if it did."""
    session.flush()
    if batch.status != BatchStatus.AWAITING_LABELS or pending_count(session, batch) > 0:
        return False
    batch.status = BatchStatus.LABELLED
    batch.labelled_at = now
    session.flush()
    campaign_service.advance(session, campaign)
    return True


def expire_overdue(session: Session, campaign: Campaign, now: datetime | None = None) -> int:
    """Expire the pending candidates not measured within the campaign's ``label_ttl`` (counted
    from their release, else from when they were made); returns how many. The caller holds the
    campaign lock."""
    ttl = ttl_of(campaign)
    if ttl is None or campaign.oracle_kind == OracleKind.EHRLICH:
        return 0
    now = now or utcnow()
    pending = list(
        session.scalars(
            select(Candidate)
            .join(Batch, Batch.id == Candidate.batch_id)
            .where(
                Candidate.campaign_id == campaign.id,
                Candidate.status.in_(list(PENDING_CANDIDATE)),
                Batch.status == BatchStatus.AWAITING_LABELS,
            )
        )
    )
    expired = [c for c in pending if (c.released_at or c.created_at) + ttl <= now]
    for c in expired:
        move(c, CandidateStatus.EXPIRED, now)
    for batch_id in sorted({c.batch_id for c in expired}):
        batch = session.get(Batch, batch_id)
        assert batch is not None
        notifications.emit(session, campaign, "labels_overdue", batch_id=batch_id)
        settle_batch(session, campaign, batch, now)
    return len(expired)


def release(session: Session, campaign: Campaign, batch: Batch, now: datetime) -> int:
    """Mark the batch ordered: its ``proposed`` and ``assay_failed`` candidates become ``released``."""
    if batch.status != BatchStatus.AWAITING_LABELS:
        raise BatchNotAwaitingLabels(f"batch {batch.id} is {batch.status}, not awaiting labels")
    cands = list(
        session.scalars(
            select(Candidate).where(
                Candidate.batch_id == batch.id,
                Candidate.status.in_([CandidateStatus.PROPOSED, CandidateStatus.ASSAY_FAILED]),
            )
        )
    )
    for c in cands:
        move(c, CandidateStatus.RELEASED, now)
    session.flush()
    return len(cands)


def withdraw(session: Session, campaign: Campaign, candidate: Candidate, now: datetime) -> None:
    """Take a candidate out of the lab for good; it is never proposed again."""
    move(candidate, CandidateStatus.WITHDRAWN, now)
    batch = session.get(Batch, candidate.batch_id)
    assert batch is not None
    settle_batch(session, campaign, batch, now)


# --- reading -------------------------------------------------------------------------------------


def get_or_404(session: Session, campaign: Campaign, candidate_id: int) -> Candidate:
    cand = session.scalar(
        select(Candidate).where(Candidate.id == candidate_id, Candidate.campaign_id == campaign.id)
    )
    if cand is None:
        raise NotFound(f"campaign {campaign.id} has no candidate {candidate_id}")
    return cand


def detail(session: Session, campaign: Campaign, cand: Candidate) -> CandidateDetail:
    text = session.scalar(select(Sequence.text).where(Sequence.id == cand.sequence_id))
    batch = session.get(Batch, cand.batch_id)
    assert batch is not None and text is not None
    label = session.scalar(
        select(Measurement)
        .where(Measurement.candidate_id == cand.id)
        .order_by(Measurement.id.desc())
        .limit(1)
    )
    live = session.execute(
        select(Measurement.value, Measurement.feasible).where(
            Measurement.sequence_id == cand.sequence_id, Measurement.superseded_at.is_(None)
        )
    ).all()
    mean = replicates.combine([(v, bool(f)) for v, f in live]) if live else None
    return CandidateDetail(
        id=cand.id,
        candidate_id=cand.id,
        batch_id=cand.batch_id,
        sequence=text,
        status=cand.status,
        round=batch.round,
        parent_sequence=cand.parent,
        seed=cand.trajectory_seed,
        refinement_step=cand.refinement_step,
        objective=cand.objective,
        checkpoint_sha256=cand.checkpoint_sha256,
        temperature=cand.temperature,
        log_likelihood=cand.log_likelihood,
        mutations=cand.mutations,
        reference_sequence=reference_of(campaign),
        reference_mutations=cand.reference_mutations,
        score=label.value if label else None,
        feasible=label.feasible if label else None,
        label=mean.value if mean else None,
        replicates=len(live),
        label_se=mean.se if mean else None,
        is_control=bool(cand.is_control),
        control_score=cand.control_score,
        released_at=cand.released_at,
        status_changed_at=cand.status_changed_at,
        created_at=cand.created_at,
    )


def _rows(session: Session, batch: Batch) -> list[tuple[Candidate, str]]:
    return list(
        session.execute(
            select(Candidate, Sequence.text)
            .join(Sequence, Sequence.id == Candidate.sequence_id)
            .where(Candidate.batch_id == batch.id)
            .order_by(Candidate.position)
        )
        .tuples()
        .all()
    )


def template_csv(session: Session, campaign: Campaign, batch: Batch) -> Iterator[str]:
    """One row per candidate still in the lab: fill in score (and status) and upload it back."""
    rows = []
    versus_reference = reference_of(campaign) is not None
    for c, text in _rows(session, batch):
        if c.status not in PENDING_CANDIDATE:
            continue
        rows.append([c.id, text, template_mutant(c, versus_reference), None, None])
    return write_rows(TEMPLATE_COLUMNS, rows)


def fasta(session: Session, batch: Batch) -> str:
    """The batch as FASTA, the candidate id as header."""
    return "".join(f">{c.id}\n{text}\n" for c, text in _rows(session, batch))
