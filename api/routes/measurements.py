"""POST /campaigns/{id}/measurements: seed data or extra data as CSV."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Header, Response, UploadFile, status
from fastapi.responses import JSONResponse

from api.deps import LockedCampaignDep, SessionDep, SettingsDep
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.measurements import UploadReport
from api.services import idempotency
from api.services import measurements as service

router = APIRouter(prefix="/campaigns", tags=["measurements"], responses=PROBLEM_RESPONSES)


IdempotencyKeyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", description="a retry with the same key and file "
                       "returns the first response; the same key with another file is a 422")]


def read_upload(file: UploadFile, settings) -> bytes:  # type: ignore[no-untyped-def]
    # One byte over the limit is enough to refuse with 413; never read an unbounded body.
    return file.file.read(settings.max_upload_bytes + 1)


@router.post("/{campaign_id}/measurements", response_model=UploadReport,
             status_code=status.HTTP_201_CREATED,
             responses={200: {"model": UploadReport, "description": "the same file was uploaded before"}})
def upload_measurements(
    campaign: LockedCampaignDep, session: SessionDep, settings: SettingsDep, response: Response,
    file: UploadFile = File(..., description="CSV: sequence,score[,feasible][,status]; UTF-8, header "
                            "row; or JSONL seed data (particle, score)"),
    idempotency_key: IdempotencyKeyHeader = None,
) -> UploadReport | JSONResponse:
    """Store labelled sequences: all rows or none (a preview and a commit of
    ``/uploads`` in one call). A wet-lab campaign waiting for seed data starts its first round.
    Uploading the same file again stores nothing (200)."""
    data = read_upload(file, settings)
    key = idempotency.begin(session, f"POST /campaigns/{campaign.id}/measurements", idempotency_key,
                            idempotency.fingerprint(data, file.filename))
    if isinstance(key, tuple):
        return JSONResponse(key[1], status_code=key[0])
    report = service.import_measurements(session, campaign=campaign, data=data,
                                         filename=file.filename, settings=settings)
    if report.already_uploaded:
        response.status_code = status.HTTP_200_OK
    idempotency.finish(key, response.status_code or status.HTTP_201_CREATED, report.model_dump(mode="json"))
    return report
