"""/campaigns/{id}/batches: proposed candidates (JSON or CSV) and their results uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from api.csvio import write_rows
from api.deps import CampaignDep, IdempotencyDep, LockedCampaignDep, SessionDep, SettingsDep
from api.routes import Cursor, Limit, json_of, parse_cursor
from api.routes.uploads import AGAIN, answer_upload, read_upload
from api.schemas.batches import BatchPage, BatchRead
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.uploads import UploadRead
from api.services import batches as service
from api.services import ingest

router = APIRouter(prefix="/campaigns", tags=["batches"], responses=PROBLEM_RESPONSES)


@router.get("/{campaign_id}/batches", response_model=BatchPage)
def list_batches(
    campaign: CampaignDep, session: SessionDep, cursor: Cursor = None, limit: Limit = 50
) -> BatchPage:
    """The campaign's batches, newest first."""
    items, next_cursor = service.list_(session, campaign, cursor=parse_cursor(cursor), limit=limit)
    return BatchPage(items=items, next_cursor=str(next_cursor) if next_cursor else None)


@router.get(
    "/{campaign_id}/batches/{batch_id}",
    response_model=BatchRead,
    responses={
        200: {
            "content": {
                "application/json": {},
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
def get_batch(
    campaign: CampaignDep,
    batch_id: int,
    session: SessionDep,
    request: Request,
    format: str | None = None,
) -> Response:
    """A batch and its candidates; as CSV (``candidate_id,sequence,score,feasible``) with
    ``?format=csv`` or ``Accept: text/csv``: fill in score (and feasible) and upload it back."""
    batch = service.get_or_404(session, campaign, batch_id)
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if not wants_csv:
        return json_of(service.read(session, batch))
    rows = [
        [c.candidate_id, c.sequence, c.score, c.feasible]
        for c in service.candidates(session, batch)
    ]
    return StreamingResponse(
        write_rows(service.CSV_COLUMNS, rows),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}-batch-{batch.id}.csv"'
        },
    )


@router.post(
    "/{campaign_id}/batches/{batch_id}/results",
    response_model=UploadRead,
    status_code=status.HTTP_201_CREATED,
    responses=AGAIN,
)
def upload_results(
    campaign: LockedCampaignDep,
    batch_id: int,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
    idempotency: IdempotencyDep,
    file: Annotated[
        UploadFile, File(description="CSV: candidate_id or sequence, score[, feasible][, status]")
    ],
) -> UploadRead:
    """The lab's results for a batch: all rows or none. When every candidate has a result the
    batch is labelled and the next round starts. The same file again stores nothing (200)."""
    data = read_upload(file, settings)
    idempotency.begin(
        f"POST /campaigns/{campaign.id}/batches/{batch_id}/results", data, file.filename
    )
    batch = service.get_or_404(session, campaign, batch_id)
    upload, already = ingest.preview_and_commit(
        session,
        campaign=campaign,
        batch=batch,
        data=data,
        filename=file.filename,
        settings=settings,
        api_key_id=request.state.api_key_id,
    )
    return answer_upload(response, idempotency, session, upload, campaign, already=already)
