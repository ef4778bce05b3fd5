"""Labelled sequences, page by page, and the whole campaign as a streamed CSV."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.csvio import write_rows
from api.models import Batch, Campaign, Candidate, Measurement, Sequence
from api.schemas.sequences import SequenceRead
from api.services import paging
from llome_core import replicates

EXPORT_COLUMNS = [
    "sequence_id",
    "status",
    "sequence",
    "score",
    "feasible",
    "round",
    "candidate_id",
    "batch_id",
    "source",
    "upload_id",
    "upload_row",
    "measured_at",
    "label",
    "replicates",
    "label_se",
    "normalized",
]


def page(
    session: Session, campaign: Campaign, *, cursor: int | None, limit: int
) -> tuple[list[SequenceRead], int | None]:
    """Labelled sequences in the order they were labelled; the cursor is the last measurement id."""
    q = (
        select(Measurement, Sequence.text, Batch.round)
        .join(Sequence, Sequence.id == Measurement.sequence_id)
        .outerjoin(Batch, Batch.id == Measurement.batch_id)
        .where(Measurement.campaign_id == campaign.id, Measurement.superseded_at.is_(None))
    )
    rows, next_cursor = paging.keyset(
        session,
        q,
        Measurement.id,
        cursor=cursor,
        limit=limit,
        newest_first=False,
        key_of=lambda row: int(row[0].id),
    )
    items = [
        SequenceRead(
            sequence_id=m.sequence_id,
            sequence=text,
            score=m.value,
            feasible=m.feasible,
            source=m.source,
            round=rnd,
            candidate_id=m.candidate_id,
            batch_id=m.batch_id,
            created_at=m.created_at,
        )
        for m, text, rnd in rows
    ]
    return items, next_cursor


def control_means(session: Session, campaign_id: int) -> dict[int, float]:
    """The mean control measurement of each batch whose controls were measured (the plate
    reference of ``normalize``)."""
    q = (
        select(Candidate.batch_id, func.avg(Candidate.control_score))
        .where(
            Candidate.campaign_id == campaign_id,
            Candidate.is_control.is_(True),
            Candidate.control_score.is_not(None),
        )
        .group_by(Candidate.batch_id)
    )
    return {bid: float(mean) for bid, mean in session.execute(q).tuples()}


def normalization(session: Session, campaign_id: int) -> tuple[str, dict[int, float]]:
    """The campaign's ``normalize`` mode and, unless it is "none", its batches' control means."""
    spec = session.scalar(select(Campaign.spec).where(Campaign.id == campaign_id)) or {}
    mode = spec.get("normalize", "none")
    return mode, (control_means(session, campaign_id) if mode != "none" else {})


EXPORT_PAGE = 2000  # sequences per short read transaction of an export


def export_csv(factory: sessionmaker[Session], campaign_id: int) -> Iterator[str]:
    """Every sequence of the campaign (labelled, and proposed but not yet labelled) as CSV.

    Read in pages of ``EXPORT_PAGE`` sequences, each in its own short transaction that ends
    before its rows are sent: a client that reads slowly holds no transaction (and, on SQLite,
    no lock) while it reads. Sequences are only ever added, so the pages join without gaps; a
    label written during the export shows if its sequence's page is read after it."""

    def page_rows(after: int) -> tuple[list[list[object]], int | None]:
        with factory() as session:
            ids = select(Sequence.id).where(
                Sequence.campaign_id == campaign_id, Sequence.id > after
            )
            last = session.scalar(
                select(func.max(ids.order_by(Sequence.id).limit(EXPORT_PAGE).subquery().c.id))
            )
            if last is None:
                return [], None
            q = (
                select(
                    Sequence.id, Sequence.text, Measurement, Candidate.id, Candidate.status, Batch
                )
                .outerjoin(
                    Measurement,
                    (Measurement.sequence_id == Sequence.id) & Measurement.superseded_at.is_(None),
                )
                .outerjoin(Candidate, Candidate.sequence_id == Sequence.id)
                .outerjoin(Batch, Batch.id == Candidate.batch_id)
                .where(
                    Sequence.campaign_id == campaign_id, Sequence.id > after, Sequence.id <= last
                )
                .order_by(Sequence.id)
            )
            out = []
            found = session.execute(q).tuples().all()
            mode, controls = normalization(session, campaign_id)

            def plate(m: Measurement) -> float | None:  # the value the optimizer learns from
                if m.value is None or mode == "none" or m.batch_id is None:
                    return m.value
                return replicates.normalized(m.value, controls.get(m.batch_id), mode)

            # Each row is one measurement; label, replicates and label_se are its sequence's
            # (the mean of its current replicates, normalised when the campaign normalises),
            # the same on each of them; normalized is this measurement's normalised value.
            groups: dict[int, dict[int, tuple[float | None, bool]]] = {}
            for sid, _text, m, *_rest in found:
                if m is not None:  # by id: a sequence proposed twice joins each label twice
                    groups.setdefault(sid, {})[m.id] = (plate(m), m.feasible)
            labels = {sid: replicates.combine(list(g.values())) for sid, g in groups.items()}
            for sid, text, m, cid, cstatus, batch in found:
                label = labels.get(sid)
                status = cstatus if m is None else ("measured" if m.feasible else "infeasible")
                out.append(
                    [
                        sid,
                        status or "",
                        text,
                        m.value if m else None,
                        m.feasible if m else None,
                        batch.round if batch else None,
                        cid,
                        batch.id if batch else None,
                        m.source if m else None,
                        m.upload_id if m else None,
                        m.row if m else None,
                        m.created_at.isoformat() if m else None,
                        label.value if label else None,
                        label.n if label else None,
                        label.se if label else None,
                        plate(m) if m is not None and mode != "none" else None,
                    ]
                )
            return out, last

    def rows() -> Iterator[list[object]]:
        after: int | None = 0
        while after is not None:
            page, after = page_rows(after)
            yield from page

    return write_rows(EXPORT_COLUMNS, rows())
