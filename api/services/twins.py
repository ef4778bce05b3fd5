"""Synthetic twins: an Ehrlich campaign shaped like a wet-lab campaign (``llome_core.twin``), run
on its own, and the forecast read from its metrics.

The twin takes the lab's alphabet size and length, batch size, rounds, optimizer and model; its
seed data is a GA run as large as the lab's seed data, so the budget matches too. Sequences the
lab excluded or added as controls are in the lab's letters and mean nothing on the twin, and a
``target_score`` on the lab's scale means nothing on Ehrlich's: those are left out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.config import Settings
from api.errors import Conflict, LlomeError, NotFound
from api.models import Campaign, CampaignEvent, Measurement, OracleKind
from api.schemas.campaigns import CampaignCreate
from api.services import campaigns as campaign_service
from api.services import metrics as metrics_service
from llome_core.sequences import EHRLICH_LETTERS
from llome_core.twin import milestones, twin_shape

WHAT_IT_TELLS = (
    "The twin is an Ehrlich function of the same shape (alphabet size, length, motifs that fit) "
    "run with the same batch size, rounds, optimizer and model: it shows how many rounds and "
    "oracle calls this setting needs on a problem of this shape, and how feasible and diverse "
    "its batches are. It is not the lab's landscape: its scores forecast nothing about the "
    "assay's values."
)


class Milestone(BaseModel):
    regret: float
    round: int | None = Field(None, description="the first round that reached it (null: not yet)")
    oracle_calls: int | None = None


class ForecastRound(BaseModel):
    round: int
    oracle_calls: int
    regret: float | None = None
    feasible_percent: float | None = None
    unique_percent: float | None = None


class ForecastRead(BaseModel):
    campaign_id: int
    twin_id: int
    twin_status: str
    twin_round: int
    shape: dict[str, int]
    milestones: list[Milestone] = Field(
        description="rounds and oracle calls to regret 0.5, 0.25 and 0 (the optimum)"
    )
    rounds: list[ForecastRound]
    plot_url: str = Field(description="the twin's regret against oracle calls (PNG)")
    what_it_tells: str = WHAT_IT_TELLS


def twin_of(session: Session, campaign: Campaign) -> Campaign | None:
    return session.scalar(
        select(Campaign)
        .where(Campaign.twin_of_id == campaign.id)
        .order_by(Campaign.id.desc())
        .limit(1)
    )


def create(
    session: Session, campaign: Campaign, *, lab_id: int, settings: Settings
) -> tuple[Campaign, bool]:
    """The campaign's twin, made and started now for lab ``lab_id``; (twin, False) when it has
    one already."""
    if campaign.oracle_kind != OracleKind.WETLAB:
        raise Conflict(
            f"campaign {campaign.id} is already synthetic (an Ehrlich oracle): a twin "
            "mirrors a wet-lab campaign"
        )
    if (existing := twin_of(session, campaign)) is not None:
        return existing, False
    v = len(campaign.alphabet)
    if v > len(EHRLICH_LETTERS):
        raise LlomeError(
            f"the alphabet has {v} letters; a twin supports at most {len(EHRLICH_LETTERS)}"
        )
    spec = campaign_service.spec_of(campaign)
    shape = twin_shape(v, campaign.length)
    seed_count = (
        session.scalar(
            select(func.count())
            .select_from(Measurement)
            .where(
                Measurement.campaign_id == campaign.id,
                Measurement.batch_id.is_(None),
                Measurement.superseded_at.is_(None),
            )
        )
        or 0
    )
    particles = max(seed_count, campaign.batch_size, 20)  # survival needs two parents
    optimizer: dict[str, Any] = {
        **spec.optimizer.model_dump(mode="json"),
        "exclude": [],
        "controls": [],
    }
    body: dict[str, Any] = {
        "name": f"twin of {campaign.name}"[:200],
        "oracle": {
            "kind": "ehrlich",
            "num_states": shape.num_states,
            "dim": shape.dim,
            "num_motifs": shape.num_motifs,
            "motif_length": shape.motif_length,
            "quantization": shape.quantization,
            "seed": campaign.seed,
            "seeding": {"num_particles": particles, "num_steps": 1, "seed": campaign.seed},
        },
        "optimizer": optimizer,
        "batch_size": campaign.batch_size,
        "rounds": campaign.rounds,
        "seed": campaign.seed,
        "stop": {**spec.stop.model_dump(), "target_score": None},
    }
    body["model"] = spec.model.model_dump(mode="json", exclude_none=True)
    try:
        data = CampaignCreate.model_validate(body)
    except ValueError as exc:
        raise LlomeError(f"no twin can be made for campaign {campaign.id}: {exc}") from None
    twin = campaign_service.create(session, data=data, lab_id=lab_id, settings=settings)
    twin.twin_of_id = campaign.id
    session.add(
        CampaignEvent(
            campaign_id=campaign.id,
            kind="twin_created",
            detail={"twin_id": twin.id, **shape.__dict__},
        )
    )
    return twin, True


def forecast(session: Session, campaign: Campaign) -> ForecastRead:
    twin = twin_of(session, campaign)
    if twin is None:
        raise NotFound(
            f"campaign {campaign.id} has no twin yet: POST /campaigns/{campaign.id}/twin"
        )
    metrics = metrics_service.compute(session, twin).rounds
    marks = milestones(
        [m.round for m in metrics], [m.regret for m in metrics], [m.oracle_calls for m in metrics]
    )
    oracle = twin.spec["oracle"]
    return ForecastRead(
        campaign_id=campaign.id,
        twin_id=twin.id,
        twin_status=twin.status,
        twin_round=twin.round,
        shape={
            k: int(oracle[k])
            for k in ("num_states", "dim", "num_motifs", "motif_length", "quantization")
        },
        milestones=[
            Milestone(regret=m.regret, round=m.round, oracle_calls=m.oracle_calls) for m in marks
        ],
        rounds=[
            ForecastRound(
                round=m.round,
                oracle_calls=m.oracle_calls,
                regret=m.regret,
                feasible_percent=None if m.feasible_fraction is None else 100 * m.feasible_fraction,
                unique_percent=None if m.unique_fraction is None else 100 * m.unique_fraction,
            )
            for m in metrics
        ],
        plot_url=f"/campaigns/{twin.id}/plot.png",
    )
