"""Synthetic twins: ``POST /campaigns/{id}/twin`` and ``GET /campaigns/{id}/forecast``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import CampaignDep, LabDep, LockedCampaignDep, SessionDep, SettingsDep
from api.schemas.campaigns import CampaignRead
from api.schemas.common import PROBLEM_RESPONSES
from api.services import campaigns as campaign_service
from api.services import twins as service
from api.services.twins import ForecastRead

router = APIRouter(prefix="/campaigns", tags=["twins"], responses=PROBLEM_RESPONSES)


@router.post(
    "/{campaign_id}/twin",
    response_model=CampaignRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CampaignRead, "description": "the twin made before"}},
)
def create_twin(
    campaign: LockedCampaignDep,
    session: SessionDep,
    lab: LabDep,
    settings: SettingsDep,
    response: Response,
) -> CampaignRead:
    """Make and start an Ehrlich campaign shaped like this wet-lab campaign (alphabet size as
    num_states, length as dim, the same batch size, rounds, optimizer and model, motifs that
    fit): a forecast before assays are spent. A second call returns the same twin (200)."""
    twin, created = service.create(session, campaign, lab_id=lab.id, settings=settings)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return campaign_service.to_read(session, twin)


@router.get("/{campaign_id}/forecast", response_model=ForecastRead)
def get_forecast(campaign: CampaignDep, session: SessionDep) -> ForecastRead:
    """What the twin shows so far: rounds and oracle calls to regret 0.5, 0.25 and 0, feasible %
    and unique % per round, and its plot. Same shape of problem, not the same landscape."""
    return service.forecast(session, campaign)
