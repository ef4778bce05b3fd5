"""What the dashboard pages show, from the same services the REST routes call (campaigns,
metrics, batches, uploads, candidates); only the page-shaped summaries are made here."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, true
from sqlalchemy.orm import Session

from api import notation
from api.config import Settings
from api.db import utcnow
from api.errors import LlomeError, NotFound, validation_errors
from api.models import Campaign, Candidate, Measurement, Sequence
from api.schemas.campaigns import CampaignCreate
from api.schemas.metrics import MetricsRead
from api.services import batches as batch_service
from api.services import campaigns as campaign_service
from api.services import candidates as candidate_service
from api.services import ingest
from api.services import metrics as metrics_service

# --- campaigns of a lab -------------------------------------------------------------------


def campaigns_of(session: Session, lab_id: int, limit: int = 200) -> list[Campaign]:
    """The lab's campaigns, newest first."""
    rows, _ = campaign_service.list_(session, lab_id=lab_id, cursor=None, limit=limit)
    return rows


def campaign_of(session: Session, lab_id: int, campaign_id: int, *, lock: bool = False) -> Campaign:
    """The lab's campaign; another lab's is "does not exist", as in the API."""
    return campaign_service.get_or_404(session, campaign_id, lock=lock, lab_id=lab_id)


@dataclass
class Summary:
    """One row of the campaigns table."""

    read: Any
    best: float | None
    objective: str
    rounds_done: int
    oracle_calls: int
    budget: int


def summary(session: Session, campaign: Campaign) -> Summary:
    read = campaign_service.to_read(session, campaign)
    m = metrics_service.compute(session, campaign)
    best = max((r.best_so_far for r in m.rounds if r.best_so_far is not None), default=None)
    labelled_rounds = [r for r in m.rounds if r.round > 0 and r.labelled > 0]
    calls = m.rounds[-1].oracle_calls if m.rounds else 0
    seed_calls = m.rounds[0].oracle_calls if m.rounds and m.rounds[0].round == 0 else 0
    return Summary(
        read=read,
        best=best,
        objective=m.objective,
        rounds_done=len(labelled_rounds),
        oracle_calls=calls,
        budget=seed_calls + campaign.rounds * campaign.batch_size,
    )


def metrics(session: Session, campaign: Campaign) -> MetricsRead:
    return metrics_service.compute(session, campaign)


def plot_version(m: MetricsRead) -> str:
    """Changes whenever the plotted data does (the page's image URL carries it)."""
    return f"{len(m.rounds)}-{sum(r.labelled for r in m.rounds)}"


# --- the create form ----------------------------------------------------------------------

FORM_FIELDS = {
    "name": "name",
    "oracle.kind": "oracle_kind",
    "oracle.alphabet": "alphabet",
    "oracle.length": "length",
    "oracle.preset": "preset",
    "optimizer.kind": "optimizer_kind",
    "optimizer.objective": "objective",
    "batch_size": "batch_size",
    "rounds": "rounds",
    "seed": "seed",
}


def campaign_body(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The POST /campaigns body the form describes; blank fields keep the API's defaults.
    ``advanced`` is JSON merged into the body (optimizer, model, seeding ...)."""
    import json

    errors: dict[str, str] = {}
    body: dict[str, Any] = {"name": form.get("name", "").strip()}
    kind = form.get("oracle_kind") or "wetlab"
    oracle: dict[str, Any] = {"kind": kind}
    if kind == "wetlab":
        oracle["alphabet"] = form.get("alphabet", "").strip()
        oracle["length"] = _number(form.get("length", ""))
    elif form.get("preset", "").strip():
        oracle["preset"] = form["preset"].strip()
    body["oracle"] = oracle
    opt_kind = form.get("optimizer_kind") or "llome"
    body["optimizer"] = {"kind": opt_kind}
    if opt_kind == "llome" and form.get("objective", "").strip():
        body["optimizer"]["objective"] = form["objective"].strip()
    for name in ("batch_size", "rounds", "seed"):
        if form.get(name, "").strip():
            body[name] = _number(form[name])
    advanced = form.get("advanced", "").strip()
    if advanced:
        try:
            extra = json.loads(advanced)
            if not isinstance(extra, dict):
                raise ValueError("it must be a JSON object")  # noqa: TRY004 (reported as a form error)
        except ValueError as exc:
            errors["advanced"] = f"advanced settings are not a JSON object: {exc}"
        else:
            _merge(body, extra)
    return body, errors


def _number(text: str) -> Any:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text  # pydantic says what is wrong with it, in the API's words


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def validate_campaign(body: dict[str, Any]) -> tuple[CampaignCreate | None, list[dict[str, str]]]:
    """The API's own schema and messages: ``[{field, reason}]`` as POST /campaigns answers 422."""
    try:
        return CampaignCreate.model_validate(body), []
    except ValidationError as exc:
        return None, validation_errors(exc.errors())


def errors_by_input(errors: list[dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Each error next to its form input; the rest (advanced settings) listed on top."""
    by_input: dict[str, str] = {}
    other: list[str] = []
    for e in errors:
        name = FORM_FIELDS.get(e["field"])
        if name is None and e["field"] in ("oracle", "body"):
            name = "alphabet" if "alphabet" in e["reason"] else None
        if name:
            by_input[name] = (by_input[name] + "; " if name in by_input else "") + e["reason"]
        else:
            other.append(f"{e['field']}: {e['reason']}")
    return by_input, other


# --- batches, lineage ---------------------------------------------------------------------


def open_batch(session: Session, campaign: Campaign) -> Any | None:
    """The newest batch with its candidates (open or last labelled), or None."""
    items, _ = batch_service.list_(session, campaign, cursor=None, limit=1)
    if not items:
        return None
    return batch_service.read(session, batch_service.get_or_404(session, campaign, items[0].id))


@dataclass
class Step:
    sequence: str
    candidate_id: int | None
    round: int | None
    score: float | None
    feasible: bool | None
    status: str
    mutations: str = ""
    log_likelihood: float | None = None
    temperature: float | None = None
    refinement_step: int | None = None


@dataclass
class Lineage:
    candidate: Step
    parent: str | None
    trajectory_seed: str | None
    steps: list[Step] = field(default_factory=list)  # seed first, the candidate last


def lineage(session: Session, campaign: Campaign, candidate_id: int) -> Lineage:
    """The candidate and the chain of sequences it was refined from, back to its seed."""
    row = (
        session.execute(
            select(Candidate, Sequence.text)
            .join(Sequence, Sequence.id == Candidate.sequence_id)
            .where(Candidate.id == candidate_id, Candidate.campaign_id == campaign.id)
        )
        .tuples()
        .first()
    )
    if row is None:
        raise NotFound(f"campaign {campaign.id} has no candidate {candidate_id}")
    cand, text = row
    chain: list[Step] = [_step(session, campaign, cand, text)]
    seen = {text}
    parent = cand.parent
    while parent and parent not in seen and len(chain) < 100:
        seen.add(parent)
        prev = (
            session.execute(
                select(Candidate, Sequence.text)
                .join(Sequence, Sequence.id == Candidate.sequence_id)
                .where(
                    Candidate.campaign_id == campaign.id,
                    Sequence.text == parent,
                    Candidate.id < chain[-1].candidate_id if chain[-1].candidate_id else true(),
                )
                .order_by(Candidate.id.desc())
                .limit(1)
            )
            .tuples()
            .first()
        )
        if prev is None:  # a seed or uploaded sequence: the start of the trajectory
            chain.append(_sequence_step(session, campaign, parent))
            break
        chain.append(_step(session, campaign, *prev))
        parent = prev[0].parent
    chain.reverse()
    for before, after in itertools.pairwise(chain):
        after.mutations = notation.mutations(before.sequence, after.sequence) or ""
    return Lineage(
        candidate=chain[-1], parent=cand.parent, trajectory_seed=cand.trajectory_seed, steps=chain
    )


def _measurement(session: Session, campaign: Campaign, text: str) -> Measurement | None:
    return session.scalar(
        select(Measurement)
        .join(Sequence, Sequence.id == Measurement.sequence_id)
        .where(
            Measurement.campaign_id == campaign.id,
            Sequence.text == text,
            Measurement.superseded_at.is_(None),
        )  # the current label, not a corrected one
    )


def _step(session: Session, campaign: Campaign, cand: Candidate, text: str) -> Step:
    from api.models import Batch

    m = _measurement(session, campaign, text)
    rnd = session.scalar(select(Batch.round).where(Batch.id == cand.batch_id))
    return Step(
        sequence=text,
        candidate_id=cand.id,
        round=rnd,
        score=m.value if m else None,
        feasible=m.feasible if m else None,
        status=cand.status,
        log_likelihood=cand.log_likelihood,
        temperature=cand.temperature,
        refinement_step=cand.refinement_step,
    )


def _sequence_step(session: Session, campaign: Campaign, text: str) -> Step:
    m = _measurement(session, campaign, text)
    return Step(
        sequence=text,
        candidate_id=None,
        round=0,
        score=m.value if m else None,
        feasible=m.feasible if m else None,
        status="seed data" if m else "unmeasured",
    )


# --- uploads: preview, then commit --------------------------------------------------------


@dataclass
class Preview:
    token: str  # the previewed upload's id ("" when the file was refused outright)
    filename: str
    batch_id: int | None
    rows: int
    accepted: int
    rejected: int
    new_measurements: int
    duplicates: int
    already_uploaded: bool
    errors: list[dict[str, Any]]
    message: str | None = None
    can_skip: bool = False  # some rows are accepted: they can be stored, the rest recorded
    replicates: dict[str, Any] | None = None  # repeated sequences, their spread and outliers


def _refused(filename: str, batch_id: int | None, data: bytes, exc: LlomeError) -> Preview:
    errs = exc.errors or [{"row": None, "column": None, "reason": exc.message}]
    bad_rows = {e.get("row") for e in errs if e.get("row") is not None}
    total = _data_rows(data)
    rejected = total if not bad_rows else len(bad_rows)
    return Preview(
        "",
        filename,
        batch_id,
        total,
        max(0, total - rejected),
        rejected,
        0,
        0,
        False,
        errs,
        exc.message,
    )


def _data_rows(data: bytes) -> int:
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return max(0, len(lines) - 1)


def preview_upload(
    session: Session,
    lab_id: int,
    campaign_id: int,
    batch_id: int | None,
    data: bytes,
    filename: str,
    settings: Settings,
    key_id: int,
) -> Preview:
    """Validate the whole file (``POST /campaigns/{id}/uploads``): no measurement is stored, only
    the previewed upload with its report."""
    try:
        campaign = campaign_of(session, lab_id, campaign_id, lock=True)
        batch = (
            batch_service.get_or_404(session, campaign, batch_id) if batch_id is not None else None
        )
        upload, already = ingest.preview(
            session,
            campaign=campaign,
            batch=batch,
            data=data,
            filename=filename,
            settings=settings,
            api_key_id=key_id,
        )
    except LlomeError as exc:  # refused as a whole (size, closed batch, unreadable file)
        session.rollback()
        return _refused(filename, batch_id, data, exc)
    r = dict(upload.report or {})
    committed = str(upload.status) == "committed"
    accepted = int(r.get("accepted", 0))
    return Preview(
        str(upload.id),
        filename,
        batch_id,
        int(r.get("rows", upload.rows or 0)),
        accepted,
        int(r.get("rejected", 0)),
        0 if committed else int(r.get("new_measurements", 0)),
        int(r.get("duplicates", 0)),
        already and committed,
        list(r.get("errors") or []),
        can_skip=not committed and accepted > 0,
        replicates=r.get("replicates"),
    )


@dataclass
class Committed:
    new_measurements: int
    already_committed: bool


def commit_upload(
    session: Session,
    lab_id: int,
    campaign_id: int,
    upload_id: int,
    settings: Settings,
    skip_rejected: bool = False,
) -> Committed:
    """Store a previewed upload's accepted rows (``POST .../uploads/{id}/commit``), all or none."""
    campaign = campaign_of(session, lab_id, campaign_id, lock=True)
    upload = ingest.get_or_404(session, campaign, upload_id)
    before = str(upload.status) == "committed"
    upload = ingest.commit(
        session, campaign=campaign, upload=upload, skip_rejected=skip_rejected, settings=settings
    )
    return Committed(0 if before else int(upload.new_measurements or 0), before)


# --- one candidate, batch files, release --------------------------------------------------


def candidate_detail(session: Session, campaign: Campaign, candidate_id: int) -> Any:
    """``GET /campaigns/{id}/candidates/{cid}``: lineage stored when the candidate was made."""
    return candidate_service.detail(
        session, campaign, candidate_service.get_or_404(session, campaign, candidate_id)
    )


def template_csv(session: Session, campaign: Campaign, batch: Any) -> str:
    return "".join(candidate_service.template_csv(session, campaign, batch))


def batch_fasta(session: Session, batch: Any) -> str:
    return candidate_service.fasta(session, batch)


def release(session: Session, campaign: Campaign, batch: Any) -> int:
    return candidate_service.release(session, campaign, batch, utcnow())


def withdraw(session: Session, campaign: Campaign, candidate_id: int) -> None:
    candidate_service.withdraw(
        session, campaign, candidate_service.get_or_404(session, campaign, candidate_id), utcnow()
    )


def can_withdraw(status: str) -> bool:
    from api.models import CANDIDATE_MOVES, CandidateStatus

    return CandidateStatus.WITHDRAWN in CANDIDATE_MOVES.get(status, frozenset())


def recent_uploads(session: Session, campaign: Campaign, limit: int = 10) -> list[Any]:
    """``GET /campaigns/{id}/uploads``: who, when, file hash and outcome, newest first."""
    rows, _ = ingest.list_(session, campaign, cursor=None, limit=limit)
    return rows
