"""Batches of proposed candidates."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import Page


class CandidateRead(BaseModel):
    candidate_id: int
    sequence: str
    status: str = Field(
        description="lab status: proposed, released, measured, failed_expression, "
        "assay_failed, withdrawn or expired"
    )
    score: float | None = None
    feasible: bool | None = None
    parent: str | None = Field(None, description="the sequence it was refined from")
    trajectory_seed: str | None = Field(None, description="the first input of its trajectory")
    refinement_step: int | None = None
    temperature: float | None = Field(None, description="null for greedy decoding and the GA")
    log_likelihood: float | None = None
    is_control: bool = Field(
        False,
        description="a control of the optimizer config (not counted "
        "against the budget); its result is in control_score",
    )
    control_score: float | None = None


class BatchSummary(BaseModel):
    id: int
    campaign_id: int
    round: int
    status: str
    size: int
    remaining: int = Field(
        description="candidates still in the lab (proposed, released, assay_failed)"
    )
    created_at: datetime
    labelled_at: datetime | None = None


class BatchRead(BatchSummary):
    candidates: list[CandidateRead]


BatchPage = Page[BatchSummary]
