"""Uploads: previewed, then committed; the one shape of an upload in every response."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import FieldError, Page


class Outlier(BaseModel):
    row: int | None = Field(description="the file's row; null for a stored measurement")
    measurement_id: int | None = Field(
        None, description="the stored measurement the file's replicates set apart (row null)"
    )
    sequence: str
    value: float
    median: float = Field(description="of the sequence's replicates, stored ones included")


class Replicates(BaseModel):
    """Repeated sequences and their spread; a replicate more than 3 robust SD (1.4826 x MAD)
    from its group's median is listed in ``outliers`` (kept unless the lab says otherwise): a
    row of the file, or a stored measurement that the file's replicates now set apart."""

    sequences: int
    measurements: int
    max_spread: float = Field(description="the widest max - min among the groups")
    outliers: list[Outlier]


class UploadCheck(BaseModel):
    """What committing the file stores: every row is either accepted or listed in ``errors``."""

    rows: int = Field(description="data rows in the file")
    accepted: int
    rejected: int
    new_measurements: int
    duplicates: int = Field(description="rows equal to a result already stored")
    replicates: Replicates | None = Field(
        None,
        description="sequences the commit leaves with "
        "several current measurements (their label: the mean)",
    )
    errors: list[FieldError] = Field(
        default_factory=list, description="{row, column, reason} per problem"
    )
    skipped_rows: list[int] | None = Field(
        None, description="rows left out by a skip_rejected commit"
    )
    skip_rejected: bool | None = None


class UploadRead(BaseModel):
    """An upload, in every response that concerns one: preview, commit, the one-step routes
    (``/measurements``, ``/batches/{id}/results``), get and list."""

    id: int
    campaign_id: int
    batch_id: int | None = None
    kind: str = Field(description="measurements (seed or extra data) or results (of one batch)")
    status: str = Field(description="previewed (nothing stored yet) or committed")
    sha256: str
    filename: str | None = None
    report: UploadCheck | None = None
    already_uploaded: bool = Field(
        False, description="the same bytes were uploaded before: this is that upload"
    )
    api_key_id: int | None = Field(None, description="who: the API key that uploaded it")
    created_at: datetime
    committed_at: datetime | None = None
    campaign_status: str | None = None
    batch_status: str | None = Field(None, description="the status of the upload's batch now")
    remaining: int | None = Field(
        None, description="candidates of the batch still without a result"
    )


UploadPage = Page[UploadRead]
