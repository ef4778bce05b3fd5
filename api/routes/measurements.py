"""POST /campaigns/{id}/measurements: seed data or extra data, previewed and committed in one call."""

from __future__ import annotations

from fastapi import APIRouter, File, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse

from api.deps import LockedCampaignDep, SessionDep, SettingsDep
from api.routes.uploads import IdempotencyKeyHeader, read_upload
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.uploads import UploadRead
from api.services import idempotency, ingest

router = APIRouter(prefix="/campaigns", tags=["measurements"], responses=PROBLEM_RESPONSES)


@router.post(
    "/{campaign_id}/measurements",
    response_model=UploadRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": UploadRead, "description": "the same file was uploaded before"}},
)
def upload_measurements(
    campaign: LockedCampaignDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    file: UploadFile = File(
        ...,
        description="CSV: sequence,score[,feasible][,status]; UTF-8, header "
        "row; or JSONL seed data (particle, score)",
    ),
    idempotency_key: IdempotencyKeyHeader = None,
) -> UploadRead | JSONResponse:
    """Store labelled sequences: all rows or none (a preview and a commit of
    ``/uploads`` in one call). A wet-lab campaign waiting for seed data starts its first round.
    Uploading the same file again stores nothing (200)."""
    data = read_upload(file, settings)
    key = idempotency.begin(
        session,
        f"POST /campaigns/{campaign.id}/measurements",
        idempotency_key,
        idempotency.fingerprint(data, file.filename),
    )
    if isinstance(key, tuple):
        return JSONResponse(key[1], status_code=key[0])
    upload, already = ingest.preview_and_commit(
        session,
        campaign=campaign,
        batch=None,
        data=data,
        filename=file.filename,
        settings=settings,
        api_key_id=request.state.api_key_id,
    )
    response.status_code = status.HTTP_200_OK if already else status.HTTP_201_CREATED
    out = ingest.to_read(session, upload, campaign, already=already)
    idempotency.finish(key, response.status_code, out.model_dump(mode="json"))
    return out
