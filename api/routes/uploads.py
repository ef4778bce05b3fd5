"""/campaigns/{id}/uploads: a file previewed (validated, nothing stored but the upload), then
committed (every accepted row in one transaction). The one-step routes (``/measurements``,
``/batches/{id}/results``) run the same pipeline, ``api.services.ingest``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from sqlalchemy.orm import Session

from api.clock import NowDep
from api.config import Settings
from api.deps import CampaignDep, IdempotencyDep, LockedCampaignDep, SessionDep, SettingsDep
from api.models import Campaign, Upload
from api.routes import Cursor, Limit, parse_cursor
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.uploads import UploadPage, UploadRead
from api.services import batches as batch_service
from api.services import ingest
from api.services.idempotency import IdempotentRequest

router = APIRouter(prefix="/campaigns", tags=["uploads"], responses=PROBLEM_RESPONSES)

AGAIN: dict[int | str, dict[str, Any]] = {
    200: {"model": UploadRead, "description": "the same file was uploaded before"}
}


def read_upload(file: UploadFile, settings: Settings) -> bytes:
    # One byte over the limit is enough to refuse with 413; never read an unbounded body.
    return file.file.read(settings.max_upload_bytes + 1)


def answer_upload(
    response: Response,
    idempotency: IdempotentRequest,
    session: Session,
    upload: Upload,
    campaign: Campaign,
    *,
    already: bool,
) -> UploadRead:
    """The end of every upload route: 201 for a new upload, 200 when the same file came before
    (``AGAIN``), kept as the answer to a retry with the same Idempotency-Key."""
    response.status_code = status.HTTP_200_OK if already else status.HTTP_201_CREATED
    return idempotency.finish(
        response.status_code, ingest.to_read(session, upload, campaign, already=already)
    )


@router.post(
    "/{campaign_id}/uploads",
    response_model=UploadRead,
    status_code=status.HTTP_201_CREATED,
    responses=AGAIN,
)
def preview_upload(
    campaign: LockedCampaignDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    idempotency: IdempotencyDep,
    file: Annotated[
        UploadFile,
        File(
            description="CSV (sequence or candidate_id, score, optional "
            "status, feasible, mutant) or JSONL seed data (particle, score)"
        ),
    ],
    batch_id: Annotated[
        int | None, Form(description="the batch these are results of (empty: seed or extra data)")
    ] = None,
) -> UploadRead:
    """Parse and validate the whole file; store nothing but the upload and its report (every
    rejected row with the reason). Commit it with ``POST .../uploads/{upload_id}/commit``."""
    data = read_upload(file, settings)
    idempotency.begin(f"POST /campaigns/{campaign.id}/uploads", data, str(batch_id), file.filename)
    batch = batch_service.get_or_404(session, campaign, batch_id) if batch_id is not None else None
    upload, already = ingest.preview(
        session,
        campaign=campaign,
        batch=batch,
        data=data,
        filename=file.filename,
        settings=settings,
        api_key_id=request.state.api_key_id,
    )
    return answer_upload(response, idempotency, session, upload, campaign, already=already)


@router.post("/{campaign_id}/uploads/{upload_id}/commit", response_model=UploadRead)
def commit_upload(
    campaign: LockedCampaignDep,
    upload_id: int,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    skip_rejected: Annotated[
        bool,
        Query(
            description="store the accepted rows of a file with "
            "errors; the rejected rows are listed in the upload's "
            "report"
        ),
    ] = False,
) -> UploadRead:
    """Store every accepted row in one transaction and move the loop on. Committing again
    returns the same result and stores nothing more. A file with errors is a 422 (nothing
    stored) unless ``skip_rejected=true``."""
    upload = ingest.get_or_404(session, campaign, upload_id)
    upload = ingest.commit(
        session,
        campaign=campaign,
        upload=upload,
        skip_rejected=skip_rejected,
        settings=settings,
        now=now,
    )
    return ingest.to_read(session, upload, campaign)


@router.get("/{campaign_id}/uploads", response_model=UploadPage)
def list_uploads(
    campaign: CampaignDep, session: SessionDep, cursor: Cursor = None, limit: Limit = 50
) -> UploadPage:
    """Every upload, newest first: who (API key), when, file hash, status and report."""
    rows, next_cursor = ingest.list_(session, campaign, cursor=parse_cursor(cursor), limit=limit)
    return UploadPage(
        items=[ingest.to_read(session, u) for u in rows],
        next_cursor=str(next_cursor) if next_cursor else None,
    )


@router.get("/{campaign_id}/uploads/{upload_id}", response_model=UploadRead)
def get_upload(campaign: CampaignDep, upload_id: int, session: SessionDep) -> UploadRead:
    return ingest.to_read(session, ingest.get_or_404(session, campaign, upload_id), campaign)
