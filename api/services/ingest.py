"""Uploads, in one pipeline: parse -> validate -> preview -> commit.

``preview`` parses and validates the whole file and stores only the upload itself (its bytes, the
key that sent it and a report of every row); ``commit`` validates again against what is stored by
then and stores every accepted row in the caller's one transaction, or nothing.
``preview_and_commit`` is both in one call (the one-step routes).

Two kinds of file: ``measurements`` (seed or extra data: ``sequence``, ``score``) and ``results``
(one batch: ``candidate_id`` or ``sequence``, ``score``). Both take an optional ``status`` column
(``measured``, ``failed_expression``, ``assay_failed``), ``feasible`` and ``mutant`` (the template
carries it for people; in a results file a filled mutant must be the candidate's own). A file in
the authors' JSONL form (one object per line with ``particle``, a list of state indices, and
``score``) is read as a measurements file.

The file's SHA-256 recognises the same bytes again: one stored copy, whatever route sent it.
Every function here runs in the caller's transaction, which holds the campaign's row lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from api import notation
from api.config import Settings
from api.csvio import (
    CsvError,
    CsvTable,
    UnreadableFile,
    parse_bool,
    parse_int,
    parse_score,
    raise_if_errors,
    read_table,
    unescape_cell,
)
from api.db import utcnow
from api.errors import (
    BatchNotAwaitingLabels,
    InvalidState,
    InvalidUpload,
    NotFound,
    PayloadTooLarge,
)
from api.models import (
    CANDIDATE_MOVES,
    PENDING_CANDIDATE,
    TERMINAL_CAMPAIGN,
    Batch,
    BatchStatus,
    Campaign,
    CampaignStatus,
    Candidate,
    CandidateStatus,
    Measurement,
    MeasurementSource,
    OracleKind,
    Sequence,
    Upload,
    UploadStatus,
)
from api.schemas.uploads import UploadCheck, UploadRead
from api.services import bulk, paging
from api.services import campaigns as campaign_service
from api.services import candidates as candidate_service
from llome_core import replicates
from llome_core.sequences import Alphabet, SequenceError

MEASUREMENTS = "measurements"
RESULTS = "results"
OUTCOMES = (
    CandidateStatus.MEASURED,
    CandidateStatus.FAILED_EXPRESSION,
    CandidateStatus.ASSAY_FAILED,
)
MEASUREMENT_COLUMNS = {"sequence", "score", "feasible", "status", "mutant"}
RESULT_COLUMNS = {"candidate_id", "sequence", "score", "feasible", "status", "mutant"}
SHOWN_ERRORS = 100  # errors listed in a refused commit: enough to fix a file


@dataclass
class Row:
    row: int
    text: str
    outcome: str  # one of OUTCOMES
    value: float | None = None
    feasible: bool = True
    candidate: Candidate | None = None
    sequence_id: int | None = None  # None: a sequence new to the campaign


@dataclass
class Plan:
    """What committing the file would do now."""

    rows: int = 0
    errors: list[CsvError] = field(default_factory=list)
    fatal: bool = False  # the file as a whole is unreadable: nothing of it can be stored
    store: list[Row] = field(default_factory=list)  # new measurements (measured, failed_expression)
    assay_failed: list[Row] = field(default_factory=list)  # outcomes with no label
    controls: list[Row] = field(default_factory=list)  # results of control candidates (not labels)
    duplicates: int = 0
    replicates: dict[str, Any] | None = None  # repeated sequences, their spread and outliers

    def rejected_rows(self) -> list[int]:
        return sorted({e.row for e in self.errors if e.row is not None and e.row > 1})

    def report(self) -> dict[str, Any]:
        rejected = len(self.rejected_rows())
        return {
            "rows": self.rows,
            "accepted": 0 if self.fatal else self.rows - rejected,
            "rejected": self.rows if self.fatal else rejected,
            "new_measurements": 0 if self.fatal else len(self.store),
            "duplicates": self.duplicates,
            **({"replicates": self.replicates} if self.replicates else {}),
            "errors": [e.as_dict() for e in self.errors],
        }


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_target(batch: Batch | None) -> str:
    """What an upload is for: a batch's results or the campaign's seed data. The same bytes sent
    to another target are another upload (a file first sent without its batch is not stuck)."""
    return f"batch {batch.id}" if batch is not None else "seed"


def what(kind: str, batch: Batch | None) -> str:
    return f"results CSV for batch {batch.id}" if kind == RESULTS and batch else "measurements CSV"


# --- parse ---------------------------------------------------------------------------------------


def _jsonl_table(data: bytes, alphabet: Alphabet) -> CsvTable | None:
    """The authors' seed data (``{"particle": [..], "score": x}`` per line) as a measurements
    table; None when the bytes are not JSONL of that form."""
    text = data.decode("utf-8-sig", errors="replace").strip()
    if not text.startswith("{"):
        return None
    rows: list[tuple[int, dict[str, str]]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            particle = obj["particle"]
            score = obj.get("score")
            # JSON true is not a score and 2.7 is not a state: nothing is rounded or read as 1.
            if isinstance(score, bool) or not (score is None or isinstance(score, (int, float))):
                raise TypeError(f"score {score!r} is not a number")
            if not isinstance(particle, list) or any(
                isinstance(s, bool) or not isinstance(s, int) for s in particle
            ):
                raise TypeError(f"particle {particle!r} is not a list of integer states")
            seq = "".join(alphabet.letters[int(s)] for s in particle)
            if any(int(s) < 0 for s in particle):
                raise IndexError
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise_if_errors(
                [
                    CsvError(
                        i,
                        "particle",
                        f"line {i} is not a JSON object with 'particle' "
                        f"(state indices below {alphabet.size}) and 'score': {exc!r}",
                    )
                ],
                "JSONL seed data",
            )
        if score is None or (isinstance(score, float) and not math.isfinite(score)):
            cells = {"sequence": seq, "score": "", "feasible": "false"}
        else:
            cells = {"sequence": seq, "score": repr(float(score)), "feasible": ""}
        rows.append((i, cells))
    return CsvTable(["sequence", "score", "feasible"], rows)


def _parse(
    data: bytes, kind: str, campaign: Campaign, batch: Batch | None, settings: Settings, plan: Plan
) -> CsvTable | None:
    """The file as a table; None (``plan.fatal``, the reasons in ``plan.errors``) when it cannot
    be read as a whole."""
    allowed = RESULT_COLUMNS if kind == RESULTS else MEASUREMENT_COLUMNS
    required = (
        [{"candidate_id", "sequence"}, {"score"}] if kind == RESULTS else [{"sequence"}, {"score"}]
    )
    try:
        table = None
        if kind == MEASUREMENTS:
            table = _jsonl_table(data, Alphabet(campaign.alphabet))
        if table is None:
            table = read_table(
                data,
                allowed=allowed,
                required=required,
                max_rows=settings.max_upload_rows,
                what=what(kind, batch),
            )
        if len(table.rows) > settings.max_upload_rows:
            raise_if_errors(
                [CsvError(None, None, f"more than {settings.max_upload_rows} rows")], "file"
            )
        return table
    except UnreadableFile:
        raise  # no table at all: a 422 at preview, nothing kept
    except InvalidUpload as exc:
        plan.fatal = True
        plan.errors = [
            CsvError(e.get("row"), e.get("column"), e["reason"]) for e in exc.errors or []
        ]
        return None


def _sequence_text(cell: str) -> str:
    # Our exports put an apostrophe before cells a spreadsheet would run as a formula; a file
    # filled in from an export comes back with it.
    return unescape_cell(cell)


def _value(
    cells: dict[str, str], row: int, errors: list[CsvError]
) -> tuple[float | None, bool] | None:
    """(score, feasible) of a measured row, or None after recording why it is invalid."""
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
            errors.append(
                CsvError(
                    row,
                    "score",
                    "score is empty: give a number, or feasible=false for a sequence that failed",
                )
            )
            return None
        feasible = True
    if not feasible and score is not None:
        errors.append(
            CsvError(
                row,
                "score",
                f"score {cells['score']!r} with feasible="
                f"{cells['feasible']!r}: an infeasible sequence has no score "
                "(leave score empty, or set feasible=true); columns score and "
                "feasible disagree",
            )
        )
        return None
    return score, feasible


def _outcome(
    cells: dict[str, str], row: int, errors: list[CsvError]
) -> tuple[str, float | None, bool] | None:
    """(status, value, feasible) of a row, or None after recording why it is invalid."""
    word = cells.get("status", "").strip().lower() or CandidateStatus.MEASURED
    if word not in OUTCOMES:
        errors.append(
            CsvError(
                row,
                "status",
                f"status {cells['status']!r} is not one of "
                f"{', '.join(OUTCOMES)} (empty means measured)",
            )
        )
        return None
    if word == CandidateStatus.MEASURED:
        parsed = _value(cells, row, errors)
        return None if parsed is None else (word, parsed[0], parsed[1])
    if cells.get("score", ""):
        errors.append(CsvError(row, "score", f"a {word} row has no score: leave the cell empty"))
        return None
    return word, None, False


# --- validate ------------------------------------------------------------------------------------


def validate(
    session: Session,
    *,
    campaign: Campaign,
    batch: Batch | None,
    kind: str,
    data: bytes,
    settings: Settings,
) -> Plan:
    """Every problem of the file against what is stored now; never raises for a bad row."""
    plan = Plan()
    table = _parse(data, kind, campaign, batch, settings, plan)
    if table is None:
        return plan
    plan.rows = len(table.rows)
    if kind == RESULTS:
        assert batch is not None
        _validate_results(session, campaign, batch, table, plan)
    else:
        _validate_measurements(session, campaign, table, plan)
    plan.errors.sort(key=lambda e: e.row or 0)
    return plan


def _current_labels(session: Session, sequence_ids: list[int]) -> dict[int, Measurement]:
    found: dict[int, Measurement] = {}
    for part in bulk.chunks(sequence_ids):
        for m in session.scalars(
            select(Measurement).where(
                bulk.among(session, Measurement.sequence_id, part),
                Measurement.superseded_at.is_(None),
            )
        ):
            found[m.sequence_id] = m
    return found


def _pending_candidates(
    session: Session, campaign: Campaign, sequence_ids: list[int]
) -> dict[int, Candidate]:
    found: dict[int, Candidate] = {}
    for part in bulk.chunks(sequence_ids):
        q = (
            select(Candidate)
            .join(Batch, Batch.id == Candidate.batch_id)
            .where(
                Candidate.campaign_id == campaign.id,
                bulk.among(session, Candidate.sequence_id, part),
                Batch.status == BatchStatus.AWAITING_LABELS,
                Candidate.status.in_(list(PENDING_CANDIDATE)),
            )
        )
        for c in session.scalars(q):
            found[c.sequence_id] = c
    return found


def _same(m: Measurement, value: float | None, feasible: bool) -> bool:
    if m.feasible != feasible:
        return False
    return (m.value is None and value is None) or (
        m.value is not None
        and value is not None
        and abs(m.value - value) <= 1e-9 * max(1.0, abs(value))
    )


def _describe(m: Measurement) -> str:
    return "infeasible" if not m.feasible else f"score {m.value!r}"


def _validate_measurements(
    session: Session, campaign: Campaign, table: CsvTable, plan: Plan
) -> None:
    alphabet = Alphabet(campaign.alphabet)
    errors = plan.errors
    rows: list[Row] = []
    for row_no, cells in table.rows:
        text = _sequence_text(cells["sequence"])
        try:
            alphabet.check(text, campaign.length)
        except SequenceError as exc:
            errors.append(CsvError(row_no, "sequence", f"sequence {text!r}: {exc}"))
            continue
        # A sequence repeated in the file, or measured before, is a replicate: every
        # measurement is stored, and the label is their mean (llome_core.replicates).
        parsed = _outcome(cells, row_no, errors)
        if parsed is not None:
            rows.append(Row(row_no, text, *parsed))

    existing = bulk.existing_sequences(session, campaign.id, [r.text for r in rows])
    stored = _current_replicates(session, [s.id for s in existing.values()])
    pending = _pending_candidates(session, campaign, [s.id for s in existing.values()])
    for r in rows:
        seq = existing.get(r.text)
        if seq is not None and seq.id in pending:
            cand = pending[seq.id]
            errors.append(
                CsvError(
                    r.row,
                    "sequence",
                    f"sequence {r.text} is candidate "
                    f"{cand.id} of batch {cand.batch_id}, which awaits labels: upload "
                    f"it to /campaigns/{campaign.id}/batches/{cand.batch_id}/results",
                )
            )
        elif r.outcome == CandidateStatus.ASSAY_FAILED:
            plan.assay_failed.append(r)  # uninformative and not a candidate: nothing to store
        elif seq is not None and any(_same(m, r.value, r.feasible) for m in stored.get(seq.id, [])):
            # The same value as a stored measurement of the sequence, from another file: that
            # measurement again (overlapping exports), not a replicate.
            plan.duplicates += 1
        else:
            r.sequence_id = seq.id if seq is not None else None
            plan.store.append(r)
    plan.replicates = _replicate_report(session, plan.store)


def _current_replicates(session: Session, sequence_ids: list[int]) -> dict[int, list[Measurement]]:
    found: dict[int, list[Measurement]] = {}
    for part in bulk.chunks(sequence_ids):
        for m in session.scalars(
            select(Measurement).where(
                bulk.among(session, Measurement.sequence_id, part),
                Measurement.superseded_at.is_(None),
            )
        ):
            found.setdefault(m.sequence_id, []).append(m)
    return found


def _replicate_report(session: Session, store: list[Row]) -> dict[str, Any] | None:
    """Sequences that will have several current measurements once ``store`` is committed: how
    many, the widest spread, and the measurements far from their group, the file's rows and
    stored ones alike (not errors: a lab may keep them; they are listed so it can look)."""
    # Each replicate as (file row, stored measurement id, value): one of the first two is None.
    groups: dict[str, list[tuple[int | None, int | None, float]]] = {}
    for r in store:
        if r.feasible and r.value is not None:
            groups.setdefault(r.text, []).append((r.row, None, r.value))
    stored_ids = {r.sequence_id: r.text for r in store if r.sequence_id is not None}
    for part in bulk.chunks(list(stored_ids)):
        for sid, mid, value in session.execute(
            select(Measurement.sequence_id, Measurement.id, Measurement.value).where(
                bulk.among(session, Measurement.sequence_id, part),
                Measurement.superseded_at.is_(None),
                Measurement.feasible.is_(True),
            )
        ).tuples():
            if value is not None:
                groups.setdefault(stored_ids[sid], []).append((None, mid, value))
    repeated = {t: g for t, g in groups.items() if len(g) > 1}
    if not repeated:
        return None
    flagged = []
    for text, group in repeated.items():
        values = [v for _, _, v in group]
        for i in replicates.outliers(values):
            row, measurement_id, _ = group[i]
            flagged.append(
                {
                    "row": row,
                    "measurement_id": measurement_id,
                    "sequence": text,
                    "value": values[i],
                    "median": statistics.median(values),
                }
            )
    # The file's rows in file order, then stored measurements in the order they were made.
    flagged.sort(key=lambda o: (o["row"] is None, o["row"] or 0, o["measurement_id"] or 0))
    return {
        "sequences": len(repeated),
        "measurements": sum(len(g) for g in repeated.values()),
        "max_spread": max(max(v for *_, v in g) - min(v for *_, v in g) for g in repeated.values()),
        "outliers": flagged,
    }


def _identify(
    cells: dict[str, str],
    row: int,
    batch: Batch,
    by_id: dict[int, Candidate],
    by_text: dict[str, Candidate],
    errors: list[CsvError],
) -> Candidate | None:
    """The candidate a results row names (by id, sequence or both, which must agree)."""
    cid_cell = cells.get("candidate_id", "")
    text = _sequence_text(cells.get("sequence", ""))
    cand: Candidate | None = None
    if cid_cell:
        try:
            cid = parse_int(cid_cell, "candidate_id")
        except ValueError as exc:
            errors.append(CsvError(row, "candidate_id", str(exc)))
            return None
        cand = by_id.get(cid)
        if cand is None:
            errors.append(
                CsvError(
                    row,
                    "candidate_id",
                    f"unknown candidate_id {cid}: batch {batch.id} has no such candidate",
                )
            )
            return None
    if text:
        by_seq = by_text.get(text)
        if by_seq is None:
            errors.append(
                CsvError(
                    row, "sequence", f"sequence {text!r} is not a candidate of batch {batch.id}"
                )
            )
            return None
        if cand is not None and by_seq.id != cand.id:
            errors.append(
                CsvError(
                    row,
                    "sequence",
                    f"sequence {text!r} is candidate {by_seq.id}, not candidate {cand.id}",
                )
            )
            return None
        cand = by_seq
    if cand is None:
        errors.append(CsvError(row, "candidate_id", "give candidate_id or sequence"))
    return cand


def _validate_results(
    session: Session, campaign: Campaign, batch: Batch, table: CsvTable, plan: Plan
) -> None:
    errors = plan.errors
    candidates = list(session.scalars(select(Candidate).where(Candidate.batch_id == batch.id)))
    texts = dict(
        session.execute(
            select(Sequence.id, Sequence.text)
            .join(Candidate, Candidate.sequence_id == Sequence.id)
            .where(Candidate.batch_id == batch.id)
        )
        .tuples()
        .all()
    )
    by_id = {c.id: c for c in candidates}
    by_text = {texts[c.sequence_id]: c for c in candidates}
    versus_reference = candidate_service.reference_of(campaign) is not None
    rows: list[Row] = []
    first_row: dict[int, int] = {}
    for row_no, cells in table.rows:
        cand = _identify(cells, row_no, batch, by_id, by_text, errors)
        if cand is None:
            continue
        mutant = _sequence_text(cells.get("mutant", ""))
        expected = candidate_service.template_mutant(cand, versus_reference)
        if mutant and not notation.same_mutations(mutant, expected):
            # The template's mutant column is for people (an empty cell says nothing, any
            # order will do); a row naming another candidate's mutations was mixed up on the
            # way (a sorted or pasted-over column).
            errors.append(
                CsvError(
                    row_no,
                    "mutant",
                    f"mutant {mutant!r} is not candidate {cand.id}'s "
                    f"({expected or '(none)'}): the row's candidate and mutant disagree",
                )
            )
            continue
        if cand.id in first_row:
            errors.append(
                CsvError(
                    row_no,
                    "candidate_id" if "candidate_id" in cells else "sequence",
                    f"candidate {cand.id} repeats row {first_row[cand.id]}",
                )
            )
            continue
        first_row[cand.id] = row_no
        parsed = _outcome(cells, row_no, errors)
        if parsed is not None:
            rows.append(
                Row(
                    row_no,
                    texts[cand.sequence_id],
                    *parsed,
                    candidate=cand,
                    sequence_id=cand.sequence_id,
                )
            )

    labels = _current_labels(session, [r.candidate.sequence_id for r in rows if r.candidate])
    for r in rows:
        cand = r.candidate
        assert cand is not None
        if cand.is_control:  # plate normalisation: the result stays on the candidate
            if (
                cand.status == r.outcome == CandidateStatus.MEASURED
                and cand.control_score is not None
                and abs(cand.control_score - (r.value or 0.0))
                <= 1e-9 * max(1.0, abs(r.value or 0.0))
            ):
                plan.duplicates += 1
            elif r.outcome not in CANDIDATE_MOVES.get(cand.status, frozenset()):
                errors.append(
                    CsvError(
                        r.row,
                        "status",
                        f"control {cand.id} is {cand.status}; it cannot become {r.outcome}",
                    )
                )
            else:
                plan.controls.append(r)
            continue
        stored = labels.get(cand.sequence_id)
        if stored is not None and r.outcome != CandidateStatus.ASSAY_FAILED:
            if _same(stored, r.value, r.feasible):
                plan.duplicates += 1
            else:
                errors.append(
                    CsvError(
                        r.row,
                        "score",
                        f"candidate {cand.id} already has a result "
                        f"({_describe(stored)}); to correct it, POST /campaigns/"
                        f"{campaign.id}/sequences/{stored.sequence_id}/corrections",
                    )
                )
            continue
        if (
            r.outcome == CandidateStatus.ASSAY_FAILED
            and cand.status == CandidateStatus.ASSAY_FAILED
        ):
            plan.duplicates += 1
            continue
        if r.outcome not in CANDIDATE_MOVES.get(cand.status, frozenset()):
            errors.append(
                CsvError(
                    r.row,
                    "status",
                    f"candidate {cand.id} is {cand.status}; it cannot become {r.outcome}",
                )
            )
            continue
        (plan.assay_failed if r.outcome == CandidateStatus.ASSAY_FAILED else plan.store).append(r)


# --- preview -------------------------------------------------------------------------------------


def _refuse_closed(campaign: Campaign, batch: Batch | None, kind: str) -> None:
    if kind == RESULTS:
        assert batch is not None
        if campaign.oracle_kind == OracleKind.EHRLICH:
            raise InvalidState(
                f"campaign {campaign.id} is labelled by its Ehrlich oracle, not by uploads"
            )
        if batch.status != BatchStatus.AWAITING_LABELS:
            raise BatchNotAwaitingLabels(
                f"batch {batch.id} is {batch.status}, not awaiting labels: nothing was stored"
            )
    # Molecules already in the lab are still data: a cancelled campaign takes the results of a
    # batch it released (stored, and nothing runs after them); nothing else once it stopped.
    if campaign.status in TERMINAL_CAMPAIGN and not (
        kind == RESULTS and campaign.status == CampaignStatus.CANCELLED
    ):
        also = (
            " (a cancelled campaign still takes the results of a batch awaiting them)"
            if campaign.status == CampaignStatus.CANCELLED
            else ""
        )
        raise InvalidState(
            f"campaign {campaign.id} is {campaign.status}: it takes no more data{also}"
        )


def _preview(
    session: Session,
    *,
    campaign: Campaign,
    batch: Batch | None,
    data: bytes,
    filename: str | None,
    settings: Settings,
    api_key_id: int | None,
) -> tuple[Upload, bool, Plan | None]:
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file has {len(data)} bytes; the limit is {settings.max_upload_bytes}"
        )
    digest = sha256_of(data)
    target = upload_target(batch)
    _forget_old_previews(session, settings)
    previous = session.scalar(
        select(Upload).where(
            Upload.campaign_id == campaign.id, Upload.target == target, Upload.sha256 == digest
        )
    )
    if previous is not None:
        return previous, True, None
    kind = RESULTS if batch is not None else MEASUREMENTS
    _refuse_closed(campaign, batch, kind)
    plan = validate(
        session, campaign=campaign, batch=batch, kind=kind, data=data, settings=settings
    )
    report = plan.report()
    # Provenance is stamped here, once: the key that sent the file. Its labels carry no key of
    # their own (one foreign-key check less per row); their history reads the upload's.
    upload = Upload(
        campaign_id=campaign.id,
        batch_id=batch.id if batch else None,
        target=target,
        sha256=digest,
        filename=filename,
        rows=plan.rows,
        new_measurements=report["new_measurements"],
        status=UploadStatus.PREVIEWED,
        kind=kind,
        content=data,
        report=report,
        api_key_id=api_key_id,
    )
    session.add(upload)
    session.flush()
    return upload, False, plan


def _forget_old_previews(session: Session, settings: Settings) -> None:
    """Previews never committed are deleted ``preview_ttl_h`` hours after they were made (their
    bytes with them): a preview is a question to the lab, not storage."""
    cutoff = utcnow() - timedelta(hours=settings.preview_ttl_h)
    session.execute(
        delete(Upload).where(Upload.status == UploadStatus.PREVIEWED, Upload.created_at < cutoff)
    )


def preview(
    session: Session,
    *,
    campaign: Campaign,
    batch: Batch | None,
    data: bytes,
    filename: str | None,
    settings: Settings,
    api_key_id: int | None,
) -> tuple[Upload, bool]:
    """Store the file as a previewed upload with its report; (upload, True) when the same bytes
    were uploaded before (that upload is returned and nothing changes)."""
    upload, already, _ = _preview(
        session,
        campaign=campaign,
        batch=batch,
        data=data,
        filename=filename,
        settings=settings,
        api_key_id=api_key_id,
    )
    return upload, already


# --- commit --------------------------------------------------------------------------------------


def commit(
    session: Session,
    *,
    campaign: Campaign,
    upload: Upload,
    skip_rejected: bool,
    settings: Settings,
    now: datetime | None = None,
    plan: Plan | None = None,
) -> Upload:
    """Store every accepted row of a previewed upload, or raise (422) and store nothing. A
    committed upload is returned unchanged. ``plan`` is the validation just done in the same
    transaction (``preview_and_commit``), else it is redone against what is stored now."""
    if upload.status == UploadStatus.COMMITTED:
        return upload
    now = now or utcnow()
    batch = session.get(Batch, upload.batch_id) if upload.batch_id is not None else None
    _refuse_closed(campaign, batch, upload.kind)
    assert upload.content is not None
    if plan is None:
        plan = validate(
            session,
            campaign=campaign,
            batch=batch,
            kind=upload.kind,
            data=upload.content,
            settings=settings,
        )
    label = what(upload.kind, batch)
    if plan.fatal:
        raise_if_errors(plan.errors, label)
    if plan.errors and not skip_rejected:
        shown = plan.errors[:SHOWN_ERRORS]
        raise InvalidUpload(
            f"{label}: {len(plan.rejected_rows())} row(s) rejected; first: row {shown[0].row}: "
            f"{shown[0].reason}. Nothing was stored: fix the file, or commit with "
            "?skip_rejected=true to store the accepted rows only.",
            errors=[e.as_dict() for e in shown],
        )
    seq_ids = bulk.insert_sequences(
        session, campaign.id, [r.text for r in plan.store if r.sequence_id is None]
    )
    bulk.insert_rows(
        session,
        Measurement.__table__,
        {
            "campaign_id": campaign.id,
            "batch_id": batch.id if batch else None,
            "upload_id": upload.id,
            "source": str(MeasurementSource.UPLOAD),
            "created_at": now,
        },
        [
            (
                seq_ids[r.text] if r.sequence_id is None else r.sequence_id,
                r.candidate.id if r.candidate else None,
                r.row,
                r.value,
                r.feasible,
            )
            for r in plan.store
        ],
        ["sequence_id", "candidate_id", "row", "value", "feasible"],
    )
    for r in plan.store:
        if r.candidate is not None:
            r.candidate.status, r.candidate.status_changed_at = r.outcome, now
    for r in plan.controls:
        assert r.candidate is not None
        r.candidate.status, r.candidate.status_changed_at = r.outcome, now
        r.candidate.control_score = r.value if r.outcome == CandidateStatus.MEASURED else None
    for r in plan.assay_failed:
        if r.candidate is not None:
            r.candidate.status, r.candidate.status_changed_at = CandidateStatus.ASSAY_FAILED, now
    upload.status = UploadStatus.COMMITTED
    upload.committed_at = now
    upload.new_measurements = len(plan.store)
    upload.report = {
        **plan.report(),
        "skipped_rows": plan.rejected_rows(),
        "skip_rejected": bool(skip_rejected and plan.errors),
    }
    session.flush()
    if batch is not None:
        candidate_service.settle_batch(session, campaign, batch, now)
    candidate_service.expire_overdue(session, campaign, now)
    if batch is None:
        campaign_service.advance(
            session, campaign
        )  # a wet-lab campaign waiting for seed data starts
    return upload


def preview_and_commit(
    session: Session,
    *,
    campaign: Campaign,
    batch: Batch | None,
    data: bytes,
    filename: str | None,
    settings: Settings,
    api_key_id: int | None,
    now: datetime | None = None,
) -> tuple[Upload, bool]:
    """The one-step routes: preview and commit in one call, all rows or none. Returns (upload,
    True) when the same bytes were committed before (nothing changes)."""
    upload, already, plan = _preview(
        session,
        campaign=campaign,
        batch=batch,
        data=data,
        filename=filename,
        settings=settings,
        api_key_id=api_key_id,
    )
    if already and upload.status == UploadStatus.COMMITTED:
        return upload, True
    # Same transaction, campaign locked since the preview: its validation still holds.
    return commit(
        session,
        campaign=campaign,
        upload=upload,
        skip_rejected=False,
        settings=settings,
        now=now,
        plan=plan,
    ), False


# --- reading -------------------------------------------------------------------------------------


def get_or_404(session: Session, campaign: Campaign, upload_id: int) -> Upload:
    upload = session.scalar(
        select(Upload).where(Upload.id == upload_id, Upload.campaign_id == campaign.id)
    )
    if upload is None:
        raise NotFound(f"campaign {campaign.id} has no upload {upload_id}")
    return upload


def list_(
    session: Session, campaign: Campaign, *, cursor: int | None, limit: int
) -> tuple[list[Upload], int | None]:
    """Newest first; the cursor is the last upload id seen."""
    query = select(Upload).where(Upload.campaign_id == campaign.id)
    return paging.keyset(session, query, Upload.id, cursor=cursor, limit=limit, newest_first=True)


def remaining_in_batch(session: Session, batch_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Candidate)
            .where(Candidate.batch_id == batch_id, Candidate.status.in_(list(PENDING_CANDIDATE)))
        )
        or 0
    )


def to_read(
    session: Session, upload: Upload, campaign: Campaign | None = None, *, already: bool = False
) -> UploadRead:
    """The one shape of an upload in every response. With ``campaign``: where the campaign and
    the upload's batch stand now."""
    batch = (
        session.get(Batch, upload.batch_id) if campaign is not None and upload.batch_id else None
    )
    return UploadRead(
        id=upload.id,
        campaign_id=upload.campaign_id,
        batch_id=upload.batch_id,
        kind=upload.kind,
        status=upload.status,
        sha256=upload.sha256,
        filename=upload.filename,
        report=UploadCheck.model_validate(upload.report) if upload.report else None,
        already_uploaded=already,
        api_key_id=upload.api_key_id,
        created_at=upload.created_at,
        committed_at=upload.committed_at,
        campaign_status=campaign.status if campaign is not None else None,
        batch_status=batch.status if batch is not None else None,
        remaining=remaining_in_batch(session, batch.id) if batch is not None else None,
    )
