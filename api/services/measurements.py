"""Measurement uploads in one step: seed or extra data (``import_measurements``) and a batch's
results (``import_batch_results``), each a preview plus commit of ``api.services.uploads`` (all
rows or none), and the row checks both use. The file's SHA-256 makes a second upload a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Text, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from api.config import Settings
from api.db import utcnow
from api.csvio import CsvError, parse_bool, parse_score
from api.errors import PayloadTooLarge
from api.models import (
    PENDING_CANDIDATE,
    Batch,
    BatchStatus,
    Campaign,
    Candidate,
    Measurement,
    Sequence,
    Upload,
)
from api.schemas.measurements import UploadReport

CHUNK = 5000  # ids per IN (...) list: under every backend's bound-parameter limit


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


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _among(session: Session, column: Any, values: list) -> Any:
    """``column IN values``; on Postgres as ``= ANY(array)``: one bound parameter instead of
    thousands (the driver parses a 5000-placeholder statement slowly, every time)."""
    if _is_postgres(session):
        if isinstance(column.type, Text) and _joinable(values):
            return column == any_(func.string_to_array(bindparam(None, ",".join(values), type_=Text()), ","))
        item = Text() if isinstance(column.type, Text) else Integer()
        return column == any_(bindparam(None, values, type_=ARRAY(item)))
    return column.in_(values)


def _joinable(texts: list[str]) -> bool:
    # Sequences never hold a comma (alphabets may not): sent as one comma-joined string, which
    # the driver passes as is, where it would quote and escape a text array item by item.
    return all("," not in t for t in texts)


def _existing(session: Session, campaign: Campaign, texts: list[str]) -> dict[str, Sequence]:
    found: dict[str, Sequence] = {}
    # A campaign's seed file meets an empty table: one tiny query instead of a lookup per row.
    if not texts or session.scalar(
            select(Sequence.id).where(Sequence.campaign_id == campaign.id).limit(1)) is None:
        return found
    for part in _chunks(texts):
        for seq in session.scalars(
            select(Sequence).where(Sequence.campaign_id == campaign.id, _among(session, Sequence.text, part))
        ):
            found[seq.text] = seq
    return found


def _measured(session: Session, sequence_ids: list[int]) -> dict[int, Measurement]:
    found: dict[int, Measurement] = {}
    for part in _chunks(sequence_ids):
        for m in session.scalars(select(Measurement).where(_among(session, Measurement.sequence_id, part),
                                                           Measurement.superseded_at.is_(None))):
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


def _sequence_ids(session: Session, campaign: Campaign, texts: list[str]) -> dict[str, int]:
    """Insert ``texts``, sequences new to the campaign, in bulk (no ORM object per row: a
    100k-row upload stays a few seconds) and return their ids. In the caller's transaction,
    whose validation found them new under the campaign lock it still holds."""
    if _is_postgres(session):
        # One statement per chunk, the texts as one parameter. A plain INSERT: ON CONFLICT's
        # speculative insertion costs a second index probe per row, and the lock rules out
        # a conflict (a unique violation would roll everything back).
        into = ("INSERT INTO sequence (campaign_id, text, created_at) "
                "SELECT :campaign_id, t, :now FROM unnest({}) AS t RETURNING id, text")
        as_joined = text(into.format("string_to_array(:texts, ',')"))
        as_array = text(into.format("CAST(:texts AS TEXT[])"))
        now = utcnow()
        ids: dict[str, int] = {}
        for part in _chunks(list(dict.fromkeys(texts)), 50_000):
            joinable = _joinable(part)
            rows = session.execute(as_joined if joinable else as_array, {
                "campaign_id": campaign.id, "now": now, "texts": ",".join(part) if joinable else part})
            ids.update((t, sid) for sid, t in rows.tuples())
        return ids
    ids = {t: s.id for t, s in _existing(session, campaign, texts).items()}
    new = [t for t in dict.fromkeys(texts) if t not in ids]
    if not new:
        return ids
    stmt = insert(Sequence).returning(Sequence.id, Sequence.text, sort_by_parameter_order=True)
    for part in _chunks(new):
        rows = session.execute(stmt, [{"campaign_id": campaign.id, "text": t} for t in part])
        ids.update((t, sid) for sid, t in rows.tuples())
    return ids


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_cell(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # int; float as its shortest exact repr


def _insert_rows(session: Session, table: Any, common: dict[str, Any], rows: list[tuple[Any, ...]],
                 columns: list[str]) -> None:
    """Insert plain rows (no ids back) in the session's transaction: ``common`` holds the
    values every row shares, ``rows`` the values of ``columns``. COPY on Postgres, a Core
    executemany per chunk elsewhere."""
    if not rows:
        return
    if _is_postgres(session):
        names = ", ".join([*common, *columns])
        shared = "".join(_copy_cell(v) + "\t" for v in common.values())
        cursor = session.connection().connection.driver_connection.cursor()
        with cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            # COPY's text format written in blocks: a third of the time of write_row per row.
            for part in _chunks(rows, 10_000):
                copy.write("".join(shared + "\t".join([_copy_cell(v) for v in row]) + "\n" for row in part))
        return
    for part in _chunks(rows):
        session.execute(insert(table), [{**common, **dict(zip(columns, row))} for row in part])


def _report(campaign: Campaign, upload: Upload, *, duplicates: int, already: bool,
            batch: Batch | None = None, remaining: int | None = None) -> UploadReport:
    return UploadReport(
        upload_id=upload.id, sha256=upload.sha256, rows=upload.rows,
        new_measurements=0 if already else upload.new_measurements,
        duplicates=upload.rows if already else duplicates, already_uploaded=already,
        batch_id=batch.id if batch else None, batch_status=batch.status if batch else None,
        remaining=remaining, campaign_status=campaign.status,
    )


def _one_step(session: Session, *, campaign: Campaign, batch: Batch | None, data: bytes,
              filename: str | None, settings: Settings) -> UploadReport:
    """Preview and commit in one call (``api.services.uploads``): all rows or none."""
    from api.services import uploads  # noqa: PLC0415 (uploads builds on this module)

    upload, already, duplicates = uploads.one_step(session, campaign=campaign, batch=batch, data=data,
                                                   filename=filename, settings=settings)
    return _report(campaign, upload, duplicates=duplicates, already=already, batch=batch,
                   remaining=remaining_in_batch(session, batch) if batch is not None else None)


def import_measurements(session: Session, *, campaign: Campaign, data: bytes,
                        filename: str | None, settings: Settings) -> UploadReport:
    """Seed data or extra data: ``sequence,score[,feasible][,status]``. The caller holds the campaign lock."""
    return _one_step(session, campaign=campaign, batch=None, data=data, filename=filename, settings=settings)


def _pending_candidates(session: Session, campaign: Campaign, sequence_ids: list[int]) -> dict[int, Candidate]:
    found: dict[int, Candidate] = {}
    for part in _chunks(sequence_ids):
        q = (
            select(Candidate)
            .join(Batch, Batch.id == Candidate.batch_id)
            .where(Candidate.campaign_id == campaign.id, _among(session, Candidate.sequence_id, part),
                   Batch.status == BatchStatus.AWAITING_LABELS,
                   Candidate.status.in_(list(PENDING_CANDIDATE)))
        )
        for c in session.scalars(q):
            found[c.sequence_id] = c
    return found


def remaining_in_batch(session: Session, batch: Batch) -> int:
    return session.scalar(
        select(func.count()).select_from(Candidate).where(
            Candidate.batch_id == batch.id, Candidate.status.in_(list(PENDING_CANDIDATE))
        )
    ) or 0


def import_batch_results(session: Session, *, campaign: Campaign, batch: Batch, data: bytes,
                         filename: str | None, settings: Settings) -> UploadReport:
    """A lab's results for one batch: ``candidate_id`` or ``sequence``, ``score``, optional
    ``feasible`` and ``status``. A batch with no candidate left pending becomes ``labelled`` and
    the loop moves on. The caller holds the campaign lock."""
    return _one_step(session, campaign=campaign, batch=batch, data=data, filename=filename, settings=settings)


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
