"""A sequence's label history and corrections."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import Strict


class MeasurementRecord(BaseModel):
    """One label with its provenance: the file (SHA-256 and row), the key, the time."""

    id: int
    score: float | None = Field(description="null when infeasible")
    feasible: bool
    source: str
    current: bool = Field(description="true for the label in force; false once corrected")
    supersedes: int | None = Field(None, description="the label this one corrects")
    superseded_by: int | None = Field(None, description="the correction that replaced this label")
    superseded_at: datetime | None = None
    candidate_id: int | None = None
    batch_id: int | None = None
    upload_id: int | None = None
    upload_sha256: str | None = Field(None, description="SHA-256 of the uploaded file")
    upload_row: int | None = Field(None, description="row of the file (the header is row 1)")
    api_key_id: int | None = Field(None, description="the key that wrote it (null: a worker)")
    api_key_prefix: str | None = None
    note: str | None = Field(None, description="the reason given for a correction")
    created_at: datetime


class HistoryRead(BaseModel):
    sequence_id: int
    sequence: str
    current: MeasurementRecord | None = Field(description="the latest current measurement")
    label: float | None = Field(
        None,
        description="the sequence's label: the mean of its current "
        "feasible replicates (null: infeasible, or not measured)",
    )
    replicates: int = Field(0, description="current measurements of the sequence")
    label_se: float | None = Field(
        None, description="standard error of the label (two or more feasible replicates)"
    )
    items: list[MeasurementRecord] = Field(description="every label, oldest first")


class CorrectionCreate(Strict):
    """A corrected label; the old one stays in the history."""

    score: float | None = Field(
        None, allow_inf_nan=False, description="empty for an infeasible sequence"
    )
    feasible: bool = True
    note: str = Field(min_length=1, max_length=2000, description="why the label changed")
    measurement_id: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="the replicate to correct (needed when the sequence has several)",
    )
