"""/campaigns/{id}/uploads: a file previewed (validated, nothing stored but the upload), then
committed (every accepted row in one transaction). The one-step routes use the same service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse

from api.clock import NowDep
from api.deps import CampaignDep, LockedCampaignDep, SessionDep, SettingsDep
from api.models import Campaign, Upload
from api.routes.campaigns import Cursor, Limit, parse_cursor
from api.routes.measurements import read_upload
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.uploads import UploadPage, UploadRead
from api.services import batches as batch_service
from api.services import idempotency
from api.services import uploads as service

router = APIRouter(prefix="/campaigns", tags=["uploads"], responses=PROBLEM_RESPONSES)

IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", description="a retry with the same key and body "
                       "returns the first response; the same key with another body is a 422")]


def to_read(upload: Upload, campaign: Campaign | None = None, *, already: bool = False) -> UploadRead:
    return UploadRead(
        id=upload.id, campaign_id=upload.campaign_id, batch_id=upload.batch_id, kind=upload.kind,
        status=upload.status, sha256=upload.sha256, filename=upload.filename,
        report=upload.report, already_uploaded=already, api_key_id=getattr(upload, "api_key_id", None),
        created_at=upload.created_at, committed_at=upload.committed_at,
        campaign_status=campaign.status if campaign is not None else None,
    )


def _stamp_uploader(request: Request, upload: Upload) -> None:
    # Provenance where the access layer names the key of this request.
    key_id = getattr(request.state, "api_key_id", None)
    if key_id is not None and hasattr(upload, "api_key_id") and upload.api_key_id is None:
        upload.api_key_id = key_id


@router.post("/{campaign_id}/uploads", response_model=UploadRead, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": UploadRead, "description": "the same file was uploaded before"}})
def preview_upload(
    campaign: LockedCampaignDep, session: SessionDep, settings: SettingsDep, request: Request,
    response: Response, idempotency_key: IdempotencyKeyHeader = None,
    file: UploadFile = File(..., description="CSV (sequence or candidate_id, score, optional status, "
                            "feasible, mutant) or JSONL seed data (particle, score)"),
    batch_id: int | None = Form(None, description="the batch these are results of (empty: seed or extra data)"),
) -> UploadRead | JSONResponse:
    """Parse and validate the whole file; store nothing but the upload and its report (every
    rejected row with the reason). Commit it with ``POST .../uploads/{upload_id}/commit``."""
    data = read_upload(file, settings)
    key = idempotency.begin(session, f"POST /campaigns/{campaign.id}/uploads", idempotency_key,
                            idempotency.fingerprint(data, str(batch_id), file.filename))
    if isinstance(key, tuple):
        return JSONResponse(key[1], status_code=key[0])
    batch = batch_service.get_or_404(session, campaign, batch_id) if batch_id is not None else None
    upload, already = service.preview(session, campaign=campaign, batch=batch, data=data,
                                      filename=file.filename, settings=settings)
    _stamp_uploader(request, upload)
    response.status_code = status.HTTP_200_OK if already else status.HTTP_201_CREATED
    out = to_read(upload, campaign, already=already)
    idempotency.finish(key, response.status_code, out.model_dump(mode="json"))
    return out


@router.post("/{campaign_id}/uploads/{upload_id}/commit", response_model=UploadRead)
def commit_upload(
    campaign: LockedCampaignDep, upload_id: int, session: SessionDep, settings: SettingsDep, now: NowDep,
    skip_rejected: Annotated[bool, Query(description="store the accepted rows of a file with errors; "
                                         "the rejected rows are listed in the upload's report")] = False,
) -> UploadRead:
    """Store every accepted row in one transaction and move the loop on. Committing again
    returns the same result and stores nothing more. A file with errors is a 422 (nothing
    stored) unless ``skip_rejected=true``."""
    upload = service.get_or_404(session, campaign, upload_id)
    upload = service.commit(session, campaign=campaign, upload=upload, skip_rejected=skip_rejected,
                            settings=settings, now=now)
    return to_read(upload, campaign)


@router.get("/{campaign_id}/uploads", response_model=UploadPage)
def list_uploads(campaign: CampaignDep, session: SessionDep, cursor: Cursor = None,
                 limit: Limit = 50) -> UploadPage:
    """Every upload, newest first: who (API key), when, file hash, status and report."""
    rows, next_cursor = service.list_(session, campaign, cursor=parse_cursor(cursor), limit=limit)
    return UploadPage(items=[to_read(u) for u in rows], next_cursor=str(next_cursor) if next_cursor else None)


@router.get("/{campaign_id}/uploads/{upload_id}", response_model=UploadRead)
def get_upload(campaign: CampaignDep, upload_id: int, session: SessionDep) -> UploadRead:
    return to_read(service.get_or_404(session, campaign, upload_id), campaign)
