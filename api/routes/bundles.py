"""A campaign as one portable file: ``GET /campaigns/{id}/bundle`` and ``POST /campaigns/import``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile, status

from api.deps import CampaignDep, LabDep, SessionDep, SettingsDep
from api.errors import PayloadTooLarge
from api.routes import file_response
from api.routes.uploads import read_upload
from api.schemas.campaigns import CampaignRead
from api.schemas.common import PROBLEM_RESPONSES
from api.services import bundles as service
from api.services import campaigns as campaign_service

router = APIRouter(prefix="/campaigns", tags=["bundles"], responses=PROBLEM_RESPONSES)


@router.get(
    "/{campaign_id}/bundle",
    response_class=Response,
    responses=file_response("application/gzip", description="the campaign as .tar.gz"),
)
def get_bundle(
    campaign: CampaignDep,
    session: SessionDep,
    weights: Annotated[bool, Query(description="include the latest checkpoint")] = True,
) -> Response:
    """The whole campaign as one ``.tar.gz``: manifest (format, llome version, SHA-256 of every
    member), spec, measurements with provenance, batches, candidates with lineage, per-round
    loop and RNG state, jobs, events, and the latest checkpoint unless ``weights=false``."""
    return Response(
        service.export(session, campaign, weights=weights),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign.id}.tar.gz"'},
    )


@router.post("/import", status_code=status.HTTP_201_CREATED, response_model=CampaignRead)
def import_campaign(
    session: SessionDep,
    lab: LabDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a bundle from GET /campaigns/{id}/bundle")],
) -> CampaignRead:
    """Restore a bundle as a new campaign of this key's lab (new ids, the same content); a
    member whose checksum does not match the manifest is a 422 naming it."""
    data = read_upload(file, settings)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the bundle is over {settings.max_upload_bytes} bytes "
            "(LLOME_MAX_UPLOAD_BYTES); export it with ?weights=false to leave "
            "the checkpoint out"
        )
    campaign = service.import_(session, data, lab_id=lab.id, settings=settings)
    return campaign_service.to_read(session, campaign, with_secret=True)
