"""A sequence's labels over time, and corrections.

Measurements are append-only: a correction inserts a new row naming the row it corrects
(``supersedes_id``), and the corrected row gets ``superseded_at`` (set once, from null; values
are never rewritten). A sequence's current measurements are those not superseded: its
replicates, whose mean is its label (``llome_core.replicates``); a correction supersedes one
of them. The optimizer sees a correction from its next step on (it is a label it has not
observed yet); a label it already trained on is not un-learned.
"""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.db import utcnow
from api.errors import Conflict, LlomeError, NotFound
from api.models import ApiKey, Campaign, Measurement, MeasurementSource, Sequence, Upload
from api.schemas.history import CorrectionCreate, HistoryRead, MeasurementRecord
from llome_core import replicates


class SequenceNotFound(NotFound):
    def __init__(self, campaign_id: int, sequence_id: int):
        super().__init__(f"campaign {campaign_id} has no sequence {sequence_id}")


def _sequence(session: Session, campaign: Campaign, sequence_id: int) -> Sequence:
    seq = session.scalar(
        select(Sequence).where(Sequence.id == sequence_id, Sequence.campaign_id == campaign.id)
    )
    if seq is None:
        raise SequenceNotFound(campaign.id, sequence_id)
    return seq


def history(session: Session, campaign: Campaign, sequence_id: int) -> HistoryRead:
    """Every label the sequence ever had, oldest first, with its provenance."""
    seq = _sequence(session, campaign, sequence_id)
    # An uploaded label's key is its upload's; a correction carries its own.
    key_id = func.coalesce(Measurement.api_key_id, Upload.api_key_id)
    rows = (
        session.execute(
            select(Measurement, Upload.sha256, key_id, ApiKey.prefix)
            .outerjoin(Upload, Upload.id == Measurement.upload_id)
            .outerjoin(ApiKey, ApiKey.id == key_id)
            .where(Measurement.sequence_id == seq.id)
            .order_by(Measurement.id)
        )
        .tuples()
        .all()
    )
    successor = {m.supersedes_id: m.id for m, _, _, _ in rows if m.supersedes_id is not None}
    items = [
        MeasurementRecord(
            id=m.id,
            score=m.value,
            feasible=m.feasible,
            source=m.source,
            current=m.superseded_at is None,
            supersedes=m.supersedes_id,
            superseded_by=successor.get(m.id),
            superseded_at=m.superseded_at,
            candidate_id=m.candidate_id,
            batch_id=m.batch_id,
            upload_id=m.upload_id,
            upload_sha256=sha,
            upload_row=m.row,
            api_key_id=key,
            api_key_prefix=prefix,
            note=m.note,
            created_at=m.created_at,
        )
        for m, sha, key, prefix in rows
    ]
    live = [i for i in items if i.current]
    label = replicates.combine([(i.score, i.feasible) for i in live]) if live else None
    return HistoryRead(
        sequence_id=seq.id,
        sequence=seq.text,
        current=live[-1] if live else None,
        items=items,
        label=label.value if label else None,
        replicates=len(live),
        label_se=label.se if label else None,
    )


def correct(
    session: Session,
    campaign: Campaign,
    sequence_id: int,
    data: CorrectionCreate,
    *,
    api_key_id: int | None,
) -> tuple[HistoryRead, bool]:
    """Supersede the sequence's current label with ``data``, recording ``api_key_id`` as who
    corrected it; returns the history and whether a row was added (the same value again adds
    nothing, so a retried request is harmless)."""
    seq = _sequence(session, campaign, sequence_id)
    # A correction supersedes one measurement; the sequence's other replicates stay.
    live = list(
        session.scalars(
            select(Measurement)
            .where(Measurement.sequence_id == seq.id, Measurement.superseded_at.is_(None))
            .order_by(Measurement.id)
        )
    )
    if data.measurement_id is not None:
        old = next((m for m in live if m.id == data.measurement_id), None)
        if old is None:
            raise Conflict(
                f"measurement {data.measurement_id} is not a current measurement of "
                f"sequence {seq.id} (see its history)"
            )
    elif len(live) > 1:
        raise Conflict(
            f"sequence {seq.id} has {len(live)} current replicates "
            f"({', '.join(str(m.id) for m in live)}): name the one to correct with "
            "measurement_id"
        )
    else:
        old = live[0] if live else None
    if old is None:
        raise Conflict(f"sequence {seq.id} has no label to correct: upload its measurement instead")
    feasible = data.feasible
    value = data.score if feasible else None
    if feasible and value is None:
        raise LlomeError("score is required for a feasible sequence (or send feasible=false)")
    if value is not None and not math.isfinite(value):
        raise LlomeError("score must be a finite number")
    same = old.feasible == feasible and (
        (old.value is None and value is None)
        or (
            old.value is not None
            and value is not None
            and abs(old.value - value) <= 1e-9 * max(1.0, abs(value))
        )
    )
    if same:
        return history(session, campaign, seq.id), False
    # The old label leaves the current-label index first, then its correction enters it; one
    # transaction, so no reader ever sees none or two.
    old.superseded_at = utcnow()
    session.flush()
    session.add(
        Measurement(
            campaign_id=campaign.id,
            sequence_id=seq.id,
            candidate_id=old.candidate_id,
            batch_id=old.batch_id,
            value=value,
            feasible=feasible,
            source=MeasurementSource.UPLOAD,
            supersedes_id=old.id,
            note=data.note,
            api_key_id=api_key_id,
        )
    )
    session.flush()
    return history(session, campaign, seq.id), True
