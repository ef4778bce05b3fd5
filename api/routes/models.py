"""/models: the models a campaign may name (registered by the operator with ``llome models add``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import LabDep, SessionDep
from api.schemas.common import PROBLEM_RESPONSES
from api.services import models as service

router = APIRouter(prefix="/models", tags=["models"], responses=PROBLEM_RESPONSES)


class ModelRead(BaseModel):
    name: str = Field(description='give it as the campaign\'s "model"')
    size_bytes: int
    created_at: datetime


@router.get("", response_model=list[ModelRead])
def list_models(session: SessionDep, lab: LabDep) -> list[ModelRead]:
    """Registered models by name, with their size; where they are kept is the server's business.
    Besides these, a campaign may use the tiny default or ``{"from_campaign": ID}``."""
    return [
        ModelRead(name=m.name, size_bytes=m.size_bytes, created_at=m.created_at)
        for m in service.list_(session)
    ]
