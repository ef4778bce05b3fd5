"""Labelled sequences, as listed and exported."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import Page


class SequenceRead(BaseModel):
    """A labelled sequence. ``score`` is null when the sequence is infeasible."""

    sequence_id: int
    sequence: str
    score: float | None
    feasible: bool
    source: str
    round: int | None = Field(
        None, description="the round whose batch proposed it (null: seed or upload)"
    )
    candidate_id: int | None = None
    batch_id: int | None = None
    created_at: datetime


SequencePage = Page[SequenceRead]
