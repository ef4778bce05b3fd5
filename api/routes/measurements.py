"""POST /campaigns/{id}/measurements: seed data or extra data, previewed and committed in one call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from api.deps import IdempotencyDep, LockedCampaignDep, SessionDep, SettingsDep
from api.routes.uploads import AGAIN, answer_upload, read_upload
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.uploads import UploadRead
from api.services import ingest

router = APIRouter(prefix="/campaigns", tags=["measurements"], responses=PROBLEM_RESPONSES)


@router.post(
    "/{campaign_id}/measurements",
    response_model=UploadRead,
    status_code=status.HTTP_201_CREATED,
    responses=AGAIN,
)
def upload_measurements(
    campaign: LockedCampaignDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    idempotency: IdempotencyDep,
    file: Annotated[
        UploadFile,
        File(
            description="CSV: sequence,score[,feasible][,status]; UTF-8, "
            "header row; or JSONL seed data (particle, score)"
        ),
    ],
) -> UploadRead:
    """Store labelled sequences: all rows or none (a preview and a commit of
    ``/uploads`` in one call). A wet-lab campaign waiting for seed data starts its first round.
    Uploading the same file again stores nothing (200)."""
    data = read_upload(file, settings)
    idempotency.begin(f"POST /campaigns/{campaign.id}/measurements", data, file.filename)
    upload, already = ingest.preview_and_commit(
        session,
        campaign=campaign,
        batch=None,
        data=data,
        filename=file.filename,
        settings=settings,
        api_key_id=request.state.api_key_id,
    )
    return answer_upload(response, idempotency, session, upload, campaign, already=already)
