"""Rows in and out of the steps: a campaign snapshot and its labels read before a step computes,
and the rows its results become, written in the step's one transaction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.models import (
    Batch,
    BatchStatus,
    Campaign,
    Candidate,
    CandidateStatus,
    Measurement,
    Round,
    Sequence,
)
from api.notation import mutations
from api.schemas.campaigns import CampaignCreate
from api.services import campaigns as campaign_service
from api.services.sequences import normalization
from llome_core import replicates
from llome_core.optimizer import Candidate as CoreCandidate
from llome_core.optimizer import Key, Labelled
from llome_core.sequences import Alphabet

# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignView:
    """What a step needs of its campaign, read once, usable with no session open."""

    id: int
    spec: CampaignCreate
    alphabet: Alphabet
    length: int
    seed: int
    batch_size: int
    optimizer_kind: str

    @classmethod
    def of(cls, c: Campaign) -> CampaignView:
        return cls(
            c.id,
            campaign_service.spec_of(c),
            Alphabet(c.alphabet),
            c.length,
            c.seed,
            c.batch_size,
            c.optimizer_kind,
        )

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.length, dtype=torch.long)
        return self.alphabet.encode(texts, self.length)

    def keys(self, texts: list[str]) -> list[Key]:
        return [tuple(r) for r in self.encode(texts).tolist()]

    def decode(self, states: Any) -> str:
        return self.alphabet.decode_one(states)


@dataclass
class LabelRows:
    """Current labels, one per sequence (values and feasibility), and the measurement ids
    behind them."""

    ids: list[int]
    texts: list[str]
    values: list[float | None]
    feasible: list[bool]

    def labelled(self, view: CampaignView) -> Labelled:
        values = [v if (f and v is not None) else 0.0 for v, f in zip(self.values, self.feasible)]
        return Labelled(
            view.encode(self.texts),
            torch.tensor(values, dtype=torch.float64),
            torch.tensor(self.feasible, dtype=torch.bool),
        )


def labels(session: Session, campaign_id: int, *, unobserved_only: bool) -> LabelRows:
    """The campaign's current labels, one per sequence (the mean of its current replicates,
    each normalised against its batch's controls when the campaign normalises:
    ``llome_core.replicates``), in the order the sequences were first measured;
    ``unobserved_only``: the sequences with a measurement no optimizer step has been told yet
    (``ids`` are those measurements)."""
    mode, controls = normalization(session, campaign_id)
    current = (Measurement.campaign_id == campaign_id, Measurement.superseded_at.is_(None))
    q = (
        select(
            Measurement.id,
            Sequence.text,
            Measurement.value,
            Measurement.feasible,
            Measurement.observed_round,
            Measurement.batch_id,
        )
        .join(Sequence, Sequence.id == Measurement.sequence_id)
        .where(*current)
        .order_by(Measurement.id)
    )
    if unobserved_only:
        fresh = select(Measurement.sequence_id).where(
            *current, Measurement.observed_round.is_(None)
        )
        q = q.where(Measurement.sequence_id.in_(fresh))
    groups: dict[str, list[tuple[float | None, bool]]] = {}
    ids: list[int] = []
    for mid, text, value, feasible, observed, batch_id in session.execute(q).tuples():
        if value is not None and batch_id is not None:
            value = replicates.normalized(value, controls.get(batch_id), mode)
        groups.setdefault(text, []).append((value, bool(feasible)))
        if not unobserved_only or observed is None:
            ids.append(mid)
    merged = {t: replicates.combine(g) for t, g in groups.items()}
    return LabelRows(
        ids, list(merged), [m.value for m in merged.values()], [m.feasible for m in merged.values()]
    )


def round_state(session: Session, campaign_id: int, number: int) -> dict[str, Any] | None:
    """The optimizer state stored with round ``number`` (None when there is none yet)."""
    return session.scalar(
        select(Round.state).where(Round.campaign_id == campaign_id, Round.number == number)
    )


def known_texts(session: Session, campaign_id: int) -> list[str]:
    """Every sequence the campaign has measured or proposed."""
    return list(session.scalars(select(Sequence.text).where(Sequence.campaign_id == campaign_id)))


def dropped_texts(session: Session, campaign_id: int) -> list[str]:
    """Sequences of candidates withdrawn or expired in the lab (never labelled)."""
    return list(
        session.scalars(
            select(Sequence.text)
            .join(Candidate, Candidate.sequence_id == Sequence.id)
            .where(
                Candidate.campaign_id == campaign_id,
                Candidate.is_control.is_(False),
                Candidate.status.in_([CandidateStatus.WITHDRAWN, CandidateStatus.EXPIRED]),
            )
            .order_by(Candidate.id)
        )
    )


def control_texts(session: Session, view: CampaignView) -> list[str]:
    """The optimizer config's controls, ``best`` resolved to the best measured sequence now."""
    out: list[str] = []
    for t in view.spec.optimizer.controls:
        if t == "best":
            best = session.scalar(
                select(Sequence.text)
                .join(Measurement, Measurement.sequence_id == Sequence.id)
                .where(
                    Measurement.campaign_id == view.id,
                    Measurement.feasible.is_(True),
                    Measurement.value.is_not(None),
                    Measurement.superseded_at.is_(None),
                )
                .order_by(Measurement.value.desc(), Measurement.id)
                .limit(1)
            )
            if best is not None:
                out.append(best)
        else:
            out.append(t)
    return out


# --- writing ------------------------------------------------------------------------------


def upsert_round(session: Session, campaign_id: int, number: int, **values: Any) -> Round:
    rnd = session.scalar(
        select(Round).where(Round.campaign_id == campaign_id, Round.number == number)
    )
    if rnd is None:
        rnd = Round(campaign_id=campaign_id, number=number)
        session.add(rnd)
    for k, v in values.items():
        setattr(rnd, k, v)
    session.flush()
    return rnd


def sequences(session: Session, campaign_id: int, texts: list[str]) -> dict[str, Sequence]:
    """The campaign's Sequence rows for ``texts``, inserting the missing ones."""
    found = (
        {
            s.text: s
            for s in session.scalars(
                select(Sequence).where(
                    Sequence.campaign_id == campaign_id, Sequence.text.in_(texts)
                )
            )
        }
        if texts
        else {}
    )
    new = [
        Sequence(campaign_id=campaign_id, text=t) for t in dict.fromkeys(texts) if t not in found
    ]
    session.add_all(new)
    session.flush()
    return {**found, **{s.text: s for s in new}}


def mark_observed(session: Session, ids: list[int], round_: int) -> None:
    """These labels were told to the optimizer in round ``round_``."""
    for i in range(0, len(ids), 5000):
        session.execute(
            update(Measurement)
            .where(Measurement.id.in_(ids[i : i + 5000]), Measurement.observed_round.is_(None))
            .values(observed_round=round_)
        )


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Metrics as JSON: no NaN or infinity (JSON has neither), tensors as lists."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, torch.Tensor):
            v = v.tolist()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, dict):
            v = jsonable(v)
        out[k] = v
    return out


def write_batch(
    session: Session,
    campaign: Campaign,
    view: CampaignView,
    round_: int,
    candidates: list[CoreCandidate],
    *,
    objective: str | None,
    checkpoint_sha256: str | None,
    controls: list[str],
) -> None:
    """The round's batch: its candidates with their lineage (why each was proposed, stored once,
    never recomputed), then the controls, after the proposals and outside the budget
    (``batch.size`` counts proposals only). No candidate: no batch (advance() then ends the
    campaign with a message)."""
    if not candidates:
        return
    texts = [view.decode(cand.sequence) for cand in candidates]
    reference = getattr(view.spec.oracle, "reference", None)
    batch = Batch(
        campaign_id=campaign.id, round=round_, status=BatchStatus.AWAITING_LABELS, size=len(texts)
    )
    session.add(batch)
    session.flush()
    seqs = sequences(session, campaign.id, texts)
    rows = []
    for i, (t, cand) in enumerate(zip(texts, candidates)):
        parent = view.decode(cand.parent) if cand.parent is not None else None
        ll = cand.log_likelihood
        rows.append(
            Candidate(
                campaign_id=campaign.id,
                batch_id=batch.id,
                sequence_id=seqs[t].id,
                position=i,
                parent=parent,
                trajectory_seed=view.decode(cand.seed) if cand.seed is not None else None,
                refinement_step=cand.refinement_step,
                temperature=cand.temperature,
                log_likelihood=(ll if ll is None or math.isfinite(ll) else None),
                objective=objective,
                checkpoint_sha256=checkpoint_sha256,
                mutations=mutations(parent, t),
                reference_mutations=mutations(reference, t),
            )
        )
    session.add_all(rows)
    extra = [t for t in dict.fromkeys(controls) if t not in set(texts)]
    if extra:
        ctrl = sequences(session, campaign.id, extra)
        session.add_all(
            Candidate(
                campaign_id=campaign.id,
                batch_id=batch.id,
                sequence_id=ctrl[t].id,
                position=len(texts) + i,
                is_control=True,
                reference_mutations=mutations(reference, t),
            )
            for i, t in enumerate(extra)
        )
