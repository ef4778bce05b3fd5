"""POST /campaigns/{id}/measurements: seed data or extra data as CSV."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Response, UploadFile, status

from api.deps import LockedCampaignDep, SessionDep, SettingsDep, get_lab
from api.schemas.common import PROBLEM_RESPONSES
from api.schemas.measurements import UploadReport
from api.services import measurements as service

router = APIRouter(prefix="/campaigns", tags=["measurements"], responses=PROBLEM_RESPONSES,
                   dependencies=[Depends(get_lab)])


def read_upload(file: UploadFile, settings) -> bytes:  # type: ignore[no-untyped-def]
    # One byte over the limit is enough to refuse with 413; never read an unbounded body.
    return file.file.read(settings.max_upload_bytes + 1)


@router.post("/{campaign_id}/measurements", response_model=UploadReport,
             status_code=status.HTTP_201_CREATED,
             responses={200: {"model": UploadReport, "description": "the same file was uploaded before"}})
def upload_measurements(
    campaign: LockedCampaignDep, session: SessionDep, settings: SettingsDep, response: Response,
    file: UploadFile = File(..., description="CSV: sequence,score[,feasible]; UTF-8, header row"),
) -> UploadReport:
    """Store labelled sequences: all rows or none. A wet-lab campaign waiting for seed data
    starts its first round. Uploading the same file again stores nothing (200)."""
    report = service.import_measurements(session, campaign=campaign, data=read_upload(file, settings),
                                         filename=file.filename, settings=settings)
    if report.already_uploaded:
        response.status_code = status.HTTP_200_OK
    return report
