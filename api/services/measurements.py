"""Measurement uploads: seed or extra data (``import_measurements``) and a batch's results
(``import_batch_results``). Every row is validated first; then everything is inserted in the
caller's one transaction, or nothing is. The file's SHA-256 makes a second upload a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.config import Settings
from api.csvio import CsvError, parse_bool, parse_score, raise_if_errors, read_table
from api.db import utcnow
from api.errors import BatchNotAwaitingLabels, InvalidState, PayloadTooLarge
from api.models import (
    TERMINAL_CAMPAIGN,
    Batch,
    BatchStatus,
    Campaign,
    Candidate,
    CandidateStatus,
    Measurement,
    MeasurementSource,
    OracleKind,
    Sequence,
    Upload,
)
from api.schemas.measurements import UploadReport
from api.services import campaigns as campaign_service
from llome_core.sequences import Alphabet, SequenceError

CHUNK = 5000  # ids per IN (...) list: under every backend's bound-parameter limit


@dataclass
class _Row:
    row: int
    text: str
    value: float | None
    feasible: bool
    candidate: Candidate | None = None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_size(data: bytes, settings: Settings) -> None:
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file has {len(data)} bytes; the limit is {settings.max_upload_bytes}"
        )


def _previous(session: Session, campaign: Campaign, digest: str) -> Upload | None:
    return session.scalar(
        select(Upload).where(Upload.campaign_id == campaign.id, Upload.sha256 == digest)
    )


def _chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sequence_text(cell: str) -> str:
    # Our exports put an apostrophe before cells a spreadsheet would run as a formula; a file
    # filled in from an export comes back with it.
    if len(cell) > 1 and cell[0] == "'" and cell[1] in "=+-@":
        return cell[1:]
    return cell


def _parse_value(cells: dict[str, str], row: int, errors: list[CsvError]) -> tuple[float | None, bool] | None:
    try:
        score = parse_score(cells.get("score", ""))
    except ValueError as exc:
        errors.append(CsvError(row, "score", str(exc)))
        return None
    try:
        feasible = parse_bool(cells.get("feasible", ""))
    except ValueError as exc:
        errors.append(CsvError(row, "feasible", str(exc)))
        return None
    if feasible is None:
        if score is None:
            errors.append(CsvError(row, "score", "score is empty: give a number, or feasible=false "
                                   "for a sequence that failed"))
            return None
        feasible = True
    if not feasible:
        score = None  # infeasible is a state, not a number
    return score, feasible


def _existing(session: Session, campaign: Campaign, texts: list[str]) -> dict[str, Sequence]:
    found: dict[str, Sequence] = {}
    for part in _chunks(texts):
        for seq in session.scalars(
            select(Sequence).where(Sequence.campaign_id == campaign.id, Sequence.text.in_(part))
        ):
            found[seq.text] = seq
    return found


def _measured(session: Session, sequence_ids: list[int]) -> dict[int, Measurement]:
    found: dict[int, Measurement] = {}
    for part in _chunks(sequence_ids):
        for m in session.scalars(select(Measurement).where(Measurement.sequence_id.in_(part))):
            found[m.sequence_id] = m
    return found


def _same(m: Measurement, value: float | None, feasible: bool) -> bool:
    if m.feasible != feasible:
        return False
    return (m.value is None and value is None) or (
        m.value is not None and value is not None and abs(m.value - value) <= 1e-9 * max(1.0, abs(value))
    )


def _describe(m: Measurement) -> str:
    return "infeasible" if not m.feasible else f"score {m.value!r}"


def _get_or_create_sequences(session: Session, campaign: Campaign, texts: list[str],
                             existing: dict[str, Sequence]) -> dict[str, Sequence]:
    new = [Sequence(campaign_id=campaign.id, text=t) for t in dict.fromkeys(texts) if t not in existing]
    session.add_all(new)
    session.flush()
    return {**existing, **{s.text: s for s in new}}


def _report(campaign: Campaign, upload: Upload, *, duplicates: int, already: bool,
            batch: Batch | None = None, remaining: int | None = None) -> UploadReport:
    return UploadReport(
        upload_id=upload.id, sha256=upload.sha256, rows=upload.rows,
        new_measurements=0 if already else upload.new_measurements,
        duplicates=upload.rows if already else duplicates, already_uploaded=already,
        batch_id=batch.id if batch else None, batch_status=batch.status if batch else None,
        remaining=remaining, campaign_status=campaign.status,
    )


def import_measurements(session: Session, *, campaign: Campaign, data: bytes,
                        filename: str | None, settings: Settings) -> UploadReport:
    """Seed data or extra data: ``sequence,score[,feasible]``. The caller holds the campaign lock."""
    _check_size(data, settings)
    digest = sha256_of(data)
    if (prev := _previous(session, campaign, digest)) is not None:
        return _report(campaign, prev, duplicates=0, already=True)
    if campaign.status in TERMINAL_CAMPAIGN:
        raise InvalidState(f"campaign {campaign.id} is {campaign.status}: it takes no more data")
    what = "measurements CSV"
    table = read_table(data, allowed={"sequence", "score", "feasible"},
                       required=[{"sequence"}, {"score"}], max_rows=settings.max_upload_rows, what=what)
    alphabet = Alphabet(campaign.alphabet)
    errors: list[CsvError] = []
    rows: list[_Row] = []
    first_row: dict[str, int] = {}
    for row_no, cells in table.rows:
        text = _sequence_text(cells["sequence"])
        try:
            alphabet.encode_one(text, campaign.length)
        except SequenceError as exc:
            errors.append(CsvError(row_no, "sequence", f"sequence {text!r}: {exc}"))
            continue
        if text in first_row:
            errors.append(CsvError(row_no, "sequence", f"sequence repeats row {first_row[text]}"))
            continue
        first_row[text] = row_no
        parsed = _parse_value(cells, row_no, errors)
        if parsed is not None:
            rows.append(_Row(row_no, text, *parsed))
    raise_if_errors(errors, what)

    existing = _existing(session, campaign, [r.text for r in rows])
    measured = _measured(session, [s.id for s in existing.values()])
    pending = _pending_candidates(session, campaign, [s.id for s in existing.values()])
    fresh: list[_Row] = []
    duplicates = 0
    for r in rows:
        seq = existing.get(r.text)
        m = measured.get(seq.id) if seq else None
        if m is not None:
            if _same(m, r.value, r.feasible):
                duplicates += 1
                continue
            errors.append(CsvError(r.row, "score", f"sequence {r.text} is already stored as "
                                   f"{_describe(m)}; corrections are not supported yet"))
        elif seq is not None and seq.id in pending:
            cand = pending[seq.id]
            errors.append(CsvError(r.row, "sequence", f"sequence {r.text} is candidate "
                                   f"{cand.id} of batch {cand.batch_id}, which awaits labels: upload "
                                   f"it to /campaigns/{campaign.id}/batches/{cand.batch_id}/results"))
        else:
            fresh.append(r)
    raise_if_errors(errors, what)

    upload = Upload(campaign_id=campaign.id, sha256=digest, filename=filename,
                    rows=len(table.rows), new_measurements=len(fresh))
    session.add(upload)
    session.flush()
    seqs = _get_or_create_sequences(session, campaign, [r.text for r in fresh], existing)
    session.add_all(
        Measurement(campaign_id=campaign.id, sequence_id=seqs[r.text].id, upload_id=upload.id,
                    row=r.row, value=r.value, feasible=r.feasible, source=MeasurementSource.UPLOAD)
        for r in fresh
    )
    session.flush()
    campaign_service.advance(session, campaign)  # a wet-lab campaign waiting for seed data starts
    return _report(campaign, upload, duplicates=duplicates, already=False)


def _pending_candidates(session: Session, campaign: Campaign, sequence_ids: list[int]) -> dict[int, Candidate]:
    found: dict[int, Candidate] = {}
    for part in _chunks(sequence_ids):
        q = (
            select(Candidate)
            .join(Batch, Batch.id == Candidate.batch_id)
            .where(Candidate.campaign_id == campaign.id, Candidate.sequence_id.in_(part),
                   Batch.status == BatchStatus.AWAITING_LABELS,
                   Candidate.status == CandidateStatus.PROPOSED)
        )
        for c in session.scalars(q):
            found[c.sequence_id] = c
    return found


def remaining_in_batch(session: Session, batch: Batch) -> int:
    return session.scalar(
        select(func.count()).select_from(Candidate).where(
            Candidate.batch_id == batch.id, Candidate.status == CandidateStatus.PROPOSED
        )
    ) or 0


def import_batch_results(session: Session, *, campaign: Campaign, batch: Batch, data: bytes,
                         filename: str | None, settings: Settings) -> UploadReport:
    """A lab's results for one batch: ``candidate_id`` or ``sequence``, ``score``, optional
    ``feasible``. A batch whose every candidate has a result becomes ``labelled`` and the loop
    moves on. The caller holds the campaign lock."""
    _check_size(data, settings)
    digest = sha256_of(data)
    if (prev := _previous(session, campaign, digest)) is not None:
        return _report(campaign, prev, duplicates=0, already=True, batch=batch,
                       remaining=remaining_in_batch(session, batch))
    if campaign.oracle_kind == OracleKind.EHRLICH:
        raise InvalidState(f"campaign {campaign.id} is labelled by its Ehrlich oracle, not by uploads")
    if batch.status != BatchStatus.AWAITING_LABELS:
        raise BatchNotAwaitingLabels(
            f"batch {batch.id} is {batch.status}, not awaiting labels: nothing was stored"
        )
    if campaign.status in TERMINAL_CAMPAIGN:
        raise InvalidState(f"campaign {campaign.id} is {campaign.status}: it takes no more data")
    what = f"results CSV for batch {batch.id}"
    table = read_table(data, allowed={"candidate_id", "sequence", "score", "feasible"},
                       required=[{"candidate_id", "sequence"}, {"score"}],
                       max_rows=settings.max_upload_rows, what=what)
    candidates = list(session.scalars(select(Candidate).where(Candidate.batch_id == batch.id)))
    texts = dict(session.execute(
        select(Sequence.id, Sequence.text).join(Candidate, Candidate.sequence_id == Sequence.id)
        .where(Candidate.batch_id == batch.id)
    ).tuples().all())
    by_id = {c.id: c for c in candidates}
    by_text = {texts[c.sequence_id]: c for c in candidates}
    errors: list[CsvError] = []
    rows: list[_Row] = []
    first_row: dict[int, int] = {}
    for row_no, cells in table.rows:
        cand = _identify(cells, row_no, batch, by_id, by_text, errors)
        if cand is None:
            continue
        if cand.id in first_row:
            errors.append(CsvError(row_no, "candidate_id" if "candidate_id" in cells else "sequence",
                                   f"candidate {cand.id} repeats row {first_row[cand.id]}"))
            continue
        first_row[cand.id] = row_no
        parsed = _parse_value(cells, row_no, errors)
        if parsed is not None:
            rows.append(_Row(row_no, texts[cand.sequence_id], *parsed, candidate=cand))
    raise_if_errors(errors, what)

    measured = _measured(session, [r.candidate.sequence_id for r in rows if r.candidate])
    fresh: list[_Row] = []
    duplicates = 0
    for r in rows:
        assert r.candidate is not None
        m = measured.get(r.candidate.sequence_id)
        if m is None:
            fresh.append(r)
        elif _same(m, r.value, r.feasible):
            duplicates += 1
        else:
            errors.append(CsvError(r.row, "score", f"candidate {r.candidate.id} already has a result "
                                   f"({_describe(m)}); corrections are not supported yet"))
    raise_if_errors(errors, what)

    upload = Upload(campaign_id=campaign.id, batch_id=batch.id, sha256=digest, filename=filename,
                    rows=len(table.rows), new_measurements=len(fresh))
    session.add(upload)
    session.flush()
    for r in fresh:
        assert r.candidate is not None
        session.add(Measurement(
            campaign_id=campaign.id, sequence_id=r.candidate.sequence_id, candidate_id=r.candidate.id,
            batch_id=batch.id, upload_id=upload.id, row=r.row, value=r.value, feasible=r.feasible,
            source=MeasurementSource.UPLOAD,
        ))
        r.candidate.status = CandidateStatus.MEASURED
    session.flush()
    remaining = remaining_in_batch(session, batch)
    if remaining == 0:
        batch.status = BatchStatus.LABELLED
        batch.labelled_at = utcnow()
        session.flush()
        campaign_service.advance(session, campaign)
    return _report(campaign, upload, duplicates=duplicates, already=False, batch=batch,
                   remaining=remaining)


def _identify(cells: dict[str, str], row: int, batch: Batch, by_id: dict[int, Candidate],
              by_text: dict[str, Candidate], errors: list[CsvError]) -> Candidate | None:
    cid_cell = cells.get("candidate_id", "")
    text = _sequence_text(cells.get("sequence", ""))
    cand: Candidate | None = None
    if cid_cell:
        try:
            cid = int(cid_cell)
        except ValueError:
            errors.append(CsvError(row, "candidate_id", f"candidate_id {cid_cell!r} is not an integer"))
            return None
        cand = by_id.get(cid)
        if cand is None:
            errors.append(CsvError(row, "candidate_id", f"unknown candidate_id {cid}: batch {batch.id} "
                                   "has no such candidate"))
            return None
    if text:
        by_seq = by_text.get(text)
        if by_seq is None:
            errors.append(CsvError(row, "sequence", f"sequence {text!r} is not a candidate of batch {batch.id}"))
            return None
        if cand is not None and by_seq.id != cand.id:
            errors.append(CsvError(row, "sequence", f"sequence {text!r} is candidate {by_seq.id}, "
                                   f"not candidate {cand.id}"))
            return None
        cand = by_seq
    if cand is None:
        errors.append(CsvError(row, "candidate_id", "give candidate_id or sequence"))
    return cand
