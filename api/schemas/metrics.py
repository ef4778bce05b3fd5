"""Per-round metrics of a campaign."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StepCost(BaseModel):
    wall_s: float
    cpu_s: float = Field(description="the worker process's CPU seconds")
    gpu_s: float = Field(description="seconds the step held a GPU (0 on CPU)")


class RoundMetrics(BaseModel):
    """One row per round (round 0: the seed data and uploads outside any batch)."""

    round: int
    oracle_calls: int = Field(description="cumulative, the GA seeding's calls included")
    labelled: int
    feasible_fraction: float | None = None
    unique_fraction: float | None = None
    mean_score: float | None = Field(None, description="infeasible sequences count as 0")
    best_score: float | None = Field(None, description="best of this round")
    best_so_far: float | None = None
    best_label: float | None = Field(
        None,
        description="the best label (the mean of a sequence's "
        "current replicates) among the round's sequences",
    )
    best_label_n: int | None = Field(None, description="replicates behind best_label")
    best_label_se: float | None = Field(None, description="standard error of best_label")
    replicated: int = Field(0, description="the round's sequences with two or more replicates")
    regret: float | None = Field(None, description="1 - best_so_far (Ehrlich only)")
    mean_regret: float | None = Field(None, description="1 - mean_score (Ehrlich only)")
    train: dict | None = None
    proposal: dict | None = None
    round_oracle_calls: int = Field(
        0,
        description="this round's oracle calls (round 0: the seed data, or the GA seeding's calls)",
    )
    cost: dict[str, StepCost] | None = Field(
        None,
        description="seconds by step (seed, train, "
        "generate, filter, label) of the run that succeeded",
    )


class MetricsRead(BaseModel):
    campaign_id: int
    objective: str = Field(description="'regret' for Ehrlich (known optimum 1), else 'score'")
    rounds: list[RoundMetrics]
