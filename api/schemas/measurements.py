"""Upload reports and labelled-sequence rows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import Page


class UploadReport(BaseModel):
    """What an upload stored. A second upload of the same bytes stores nothing and says so."""

    upload_id: int
    sha256: str
    rows: int = Field(description="data rows in the file")
    new_measurements: int
    duplicates: int = Field(description="rows equal to a measurement already stored")
    already_uploaded: bool = Field(description="the same file was uploaded before: nothing new")
    batch_id: int | None = None
    batch_status: str | None = None
    remaining: int | None = Field(None, description="candidates of the batch still without a result")
    campaign_status: str


class SequenceRead(BaseModel):
    """A labelled sequence. ``score`` is null when the sequence is infeasible."""

    sequence_id: int
    sequence: str
    score: float | None
    feasible: bool
    source: str
    round: int | None = Field(None, description="the round whose batch proposed it (null: seed or upload)")
    candidate_id: int | None = None
    batch_id: int | None = None
    created_at: datetime


SequencePage = Page[SequenceRead]
