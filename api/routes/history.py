"""/campaigns/{id}/sequences/{sid}: a sequence's label history, and corrections."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from api.deps import CampaignDep, LockedCampaignDep, SessionDep
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.history import CorrectionCreate, HistoryRead
from api.services import history as service

router = APIRouter(prefix="/campaigns", tags=["measurements"], responses=PROBLEM_RESPONSES)


@router.get("/{campaign_id}/sequences/{sequence_id}/history", response_model=HistoryRead)
def get_sequence_history(
    campaign: CampaignDep, sequence_id: int, session: SessionDep
) -> HistoryRead:
    """Every label the sequence had, oldest first, each with its provenance (file SHA-256, row,
    key, time); ``current`` is the label in force."""
    return service.history(session, campaign, sequence_id)


@router.post(
    "/{campaign_id}/sequences/{sequence_id}/corrections",
    response_model=HistoryRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": HistoryRead, "description": "the label already has this value"}},
)
def correct_sequence(
    campaign: LockedCampaignDep,
    sequence_id: int,
    data: CorrectionCreate,
    session: SessionDep,
    request: Request,
    response: Response,
) -> HistoryRead:
    """Correct the sequence's current label: a new label supersedes it (nothing is overwritten;
    the history keeps both). The optimizer uses the corrected value from its next step on."""
    result, added = service.correct(
        session, campaign, sequence_id, data, api_key_id=request.state.api_key_id
    )
    if not added:
        response.status_code = status.HTTP_200_OK
    return result
