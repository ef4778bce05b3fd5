"""/campaigns/{id}/uploads: a file previewed (validated, nothing stored but the upload), then
committed (every accepted row in one transaction). The one-step routes use the same service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse

from api.clock import NowDep
from api.config import Settings
from api.deps import CampaignDep, LockedCampaignDep, SessionDep, SettingsDep
from api.routes.campaigns import Cursor, Limit, parse_cursor
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.uploads import UploadPage, UploadRead
from api.services import batches as batch_service
from api.services import idempotency, ingest

router = APIRouter(prefix="/campaigns", tags=["uploads"], responses=PROBLEM_RESPONSES)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="a retry with the same key and body "
        "returns the first response; the same key with another body is a 422",
    ),
]


def read_upload(file: UploadFile, settings: Settings) -> bytes:
    # One byte over the limit is enough to refuse with 413; never read an unbounded body.
    return file.file.read(settings.max_upload_bytes + 1)


@router.post(
    "/{campaign_id}/uploads",
    response_model=UploadRead,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": UploadRead, "description": "the same file was uploaded before"}},
)
def preview_upload(
    campaign: LockedCampaignDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
    file: UploadFile = File(
        ...,
        description="CSV (sequence or candidate_id, score, optional status, "
        "feasible, mutant) or JSONL seed data (particle, score)",
    ),
    batch_id: int | None = Form(
        None, description="the batch these are results of (empty: seed or extra data)"
    ),
) -> UploadRead | JSONResponse:
    """Parse and validate the whole file; store nothing but the upload and its report (every
    rejected row with the reason). Commit it with ``POST .../uploads/{upload_id}/commit``."""
    data = read_upload(file, settings)
    key = idempotency.begin(
        session,
        f"POST /campaigns/{campaign.id}/uploads",
        idempotency_key,
        idempotency.fingerprint(data, str(batch_id), file.filename),
    )
    if isinstance(key, tuple):
        return JSONResponse(key[1], status_code=key[0])
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
    response.status_code = status.HTTP_200_OK if already else status.HTTP_201_CREATED
    out = ingest.to_read(session, upload, campaign, already=already)
    idempotency.finish(key, response.status_code, out.model_dump(mode="json"))
    return out


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
            description="store the accepted rows of a file with errors; "
            "the rejected rows are listed in the upload's report"
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
