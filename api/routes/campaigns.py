"""/campaigns: create, read, list, pause|resume|cancel, metrics, plot, sequences, export."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import (
    CampaignDep,
    FactoryDep,
    IdempotencyDep,
    LabDep,
    LockedCampaignDep,
    SessionDep,
    SettingsDep,
)
from api.models import CampaignEvent
from api.routes import Cursor, Limit, file_response, json_of, parse_cursor
from api.schemas.campaigns import CampaignCreate, CampaignPage, CampaignRead
from api.schemas.common import PROBLEM_RESPONSES, Page
from api.schemas.metrics import MetricsRead
from api.schemas.sequences import SequencePage
from api.services import campaigns as service
from api.services import metrics as metrics_service
from api.services import paging
from api.services import sequences as sequence_service

router = APIRouter(prefix="/campaigns", tags=["campaigns"], responses=PROBLEM_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CampaignRead)
def create_campaign(
    data: CampaignCreate,
    session: SessionDep,
    lab: LabDep,
    settings: SettingsDep,
    idempotency: IdempotencyDep,
) -> CampaignRead:
    """Create a campaign. Ehrlich campaigns start seeding with the GA at once; wet-lab campaigns
    wait for seed data (``POST /campaigns/{id}/measurements``)."""
    idempotency.begin(f"lab {lab.id} POST /campaigns", data.model_dump_json())
    campaign = service.create(session, data=data, lab_id=lab.id, settings=settings)
    out = service.to_read(session, campaign, with_secret=True)
    return idempotency.finish(status.HTTP_201_CREATED, out)


@router.get("", response_model=CampaignPage)
def list_campaigns(
    session: SessionDep, lab: LabDep, cursor: Cursor = None, limit: Limit = 50
) -> CampaignPage:
    """The lab's campaigns, newest first."""
    rows, next_cursor = service.list_(
        session, cursor=parse_cursor(cursor), limit=limit, lab_id=lab.id
    )
    return CampaignPage(
        items=[service.to_read(session, c) for c in rows],
        next_cursor=str(next_cursor) if next_cursor else None,
    )


@router.get("/{campaign_id:int}", response_model=CampaignRead)
def get_campaign(campaign: CampaignDep, session: SessionDep) -> Response:
    """State, progress (phase, step, percent, ETA) and, on failure, the error in words."""
    return json_of(service.to_read(session, campaign))


@router.post("/{campaign_id}/pause", response_model=CampaignRead)
def pause_campaign(campaign: LockedCampaignDep, session: SessionDep) -> CampaignRead:
    """Stop after the running step's next progress report; ``resume`` continues from there."""
    service.pause(session, campaign)
    return service.to_read(session, campaign)


@router.post("/{campaign_id}/resume", response_model=CampaignRead)
def resume_campaign(campaign: LockedCampaignDep, session: SessionDep) -> CampaignRead:
    service.resume(session, campaign)
    return service.to_read(session, campaign)


@router.post("/{campaign_id}/cancel", response_model=CampaignRead)
def cancel_campaign(campaign: LockedCampaignDep, session: SessionDep) -> CampaignRead:
    """Stop for good (a cancelled campaign never runs again)."""
    service.cancel(session, campaign)
    return service.to_read(session, campaign)


@router.get("/{campaign_id}/metrics", response_model=MetricsRead)
def get_metrics(campaign: CampaignDep, session: SessionDep) -> MetricsRead:
    """Per round: oracle calls so far, best score, regret (Ehrlich), feasible and unique fractions."""
    return metrics_service.compute(session, campaign)


@router.get(
    "/{campaign_id}/plot.png",
    response_class=Response,
    responses=file_response("image/png", description="the plot as PNG"),
)
def get_plot(campaign: CampaignDep, session: SessionDep) -> Response:
    """Best score (regret for Ehrlich) against oracle calls."""
    png = metrics_service.plot_png(
        metrics_service.compute(session, campaign), f"campaign {campaign.id}: {campaign.name}"
    )
    return Response(png, media_type="image/png")


@router.get("/{campaign_id}/sequences", response_model=SequencePage)
def list_sequences(
    campaign: CampaignDep, session: SessionDep, cursor: Cursor = None, limit: Limit = 100
) -> SequencePage:
    """Every labelled sequence, in the order it was labelled."""
    items, next_cursor = sequence_service.page(
        session, campaign, cursor=parse_cursor(cursor), limit=limit
    )
    return SequencePage(items=items, next_cursor=str(next_cursor) if next_cursor else None)


@router.get(
    "/{campaign_id}/export",
    response_class=StreamingResponse,
    responses=file_response("text/csv", description="the campaign as CSV"),
)
def export_campaign(
    campaign: CampaignDep,
    factory: FactoryDep,
    session: SessionDep,
    table: Annotated[
        Literal["sequences", "rounds"],
        Query(
            description=(
                "sequences: every labelled and proposed sequence with its provenance; rounds: one row "
                "per round with its oracle calls and the wall, CPU and GPU seconds of each step"
            )
        ),
    ] = "sequences",
) -> StreamingResponse:
    """Everything as CSV (streamed): labelled and proposed sequences with their provenance, or
    with ``?table=rounds`` the per-round accounting."""
    if table == "rounds":
        body = metrics_service.rounds_csv(metrics_service.compute(session, campaign))
    else:
        body = sequence_service.export_csv(factory, campaign.id)
    name = f"campaign-{campaign.id}" + ("-rounds" if table == "rounds" else "")
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


class EventRead(BaseModel):
    id: int
    kind: str
    from_status: str | None
    to_status: str | None
    detail: dict | None
    at: str


@router.get("/{campaign_id}/events", response_model=Page[EventRead])
def list_events(
    campaign: CampaignDep, session: SessionDep, cursor: Cursor = None, limit: Limit = 100
) -> Page[EventRead]:
    """Every state change of the campaign, oldest first."""
    rows, next_cursor = paging.keyset(
        session,
        select(CampaignEvent).where(CampaignEvent.campaign_id == campaign.id),
        CampaignEvent.id,
        cursor=parse_cursor(cursor),
        limit=limit,
        newest_first=False,
    )
    return Page[EventRead](
        items=[
            EventRead(
                id=e.id,
                kind=e.kind,
                from_status=e.from_status,
                to_status=e.to_status,
                detail=e.detail,
                at=e.at.isoformat(),
            )
            for e in rows
        ],
        next_cursor=str(next_cursor) if next_cursor else None,
    )
