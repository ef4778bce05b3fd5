"""Stop rules: when a campaign should end before its last round, and the sentence that says why.

Checked after every labelled round. ``target_score``: the best label so far reached it;
``patience_rounds``: the best has not improved for that many rounds; ``max_oracle_calls``: one
more batch would spend more oracle calls than allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopRule:
    """Any of the three rules; None turns a rule off."""

    target_score: float | None = None
    patience_rounds: int | None = None
    max_oracle_calls: int | None = None

    def __post_init__(self) -> None:
        if self.patience_rounds is not None and self.patience_rounds < 1:
            raise ValueError(f"patience_rounds must be at least 1, not {self.patience_rounds}")
        if self.max_oracle_calls is not None and self.max_oracle_calls < 1:
            raise ValueError(f"max_oracle_calls must be at least 1, not {self.max_oracle_calls}")

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.target_score, self.patience_rounds, self.max_oracle_calls)
        )


@dataclass(frozen=True)
class RoundRecord:
    """One labelled round (0: the seed data): its best label and the oracle calls so far."""

    round: int
    best_score: float | None
    oracle_calls: int


def stop_reason(rule: StopRule, history: Sequence[RoundRecord], next_batch: int) -> str | None:
    """The sentence naming the rule that fires after the last round of ``history`` (rounds in
    order), or None to go on. ``next_batch``: the oracle calls the next round would make."""
    if not history:
        return None
    last = history[-1]
    best, best_round = None, None
    for rec in history:
        if rec.best_score is not None and (best is None or rec.best_score > best):
            best, best_round = rec.best_score, rec.round
    if rule.target_score is not None and best is not None and best >= rule.target_score:
        return f"target_score {rule.target_score:g} reached: best {best:.4g} in round {best_round}"
    if rule.patience_rounds is not None and best_round is not None:
        stale = last.round - best_round
        if stale >= rule.patience_rounds:
            return (
                f"patience_rounds {rule.patience_rounds} reached: the best {best:.4g} "
                f"(round {best_round}) did not improve for {stale} "
                + ("round" if stale == 1 else "rounds")
            )
    if rule.max_oracle_calls is not None and last.oracle_calls + next_batch > rule.max_oracle_calls:
        return (
            f"max_oracle_calls {rule.max_oracle_calls} reached: {last.oracle_calls} oracle "
            f"calls by round {last.round}, and the next batch of {next_batch} would exceed it"
        )
    return None
