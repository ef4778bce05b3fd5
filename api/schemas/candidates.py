"""One candidate with its lineage, and what releasing a batch to the lab did."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ReleaseRead(BaseModel):
    batch_id: int
    released: int = Field(description="candidates moved to released by this call")
    status_counts: dict[str, int]


class CandidateDetail(BaseModel):
    """A candidate and why it was proposed; lineage is stored when the candidate is made."""

    id: int
    candidate_id: int
    batch_id: int
    sequence: str
    status: str
    round: int
    parent_sequence: str | None = Field(None, description="the sequence it was refined from")
    seed: str | None = Field(None, description="the first input of its trajectory")
    refinement_step: int | None = None
    objective: str | None = Field(None, description="the objective of the model that made it")
    checkpoint_sha256: str | None = None
    temperature: float | None = Field(None, description="null for greedy decoding and the GA")
    log_likelihood: float | None = None
    mutations: str | None = Field(
        None, description="against the parent, ProteinGym notation (A14D:K2R, 1-based)"
    )
    reference_sequence: str | None = None
    reference_mutations: str | None = Field(
        None, description="against the campaign's reference sequence"
    )
    score: float | None = None
    feasible: bool | None = None
    label: float | None = Field(
        None,
        description="its sequence's label: the mean of the current "
        "replicates (this result and any other measurement of it)",
    )
    replicates: int = Field(0, description="current measurements of its sequence")
    label_se: float | None = Field(None, description="standard error of the label")
    is_control: bool = False
    control_score: float | None = None
    released_at: datetime | None = None
    status_changed_at: datetime | None = None
    created_at: datetime
