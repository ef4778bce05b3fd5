"""Stop rules: each rule fires exactly when its condition first holds, and names its value."""

from __future__ import annotations

import pytest

from llome_core.stopping import RoundRecord, StopRule, stop_reason


def rounds(*bests: float | None, seed_calls: int = 10, batch: int = 20) -> list[RoundRecord]:
    return [RoundRecord(r, b, seed_calls + batch * r) for r, b in enumerate(bests)]


def test_target_score_fires_once_the_best_reaches_it() -> None:
    rule = StopRule(target_score=0.9)
    assert stop_reason(rule, rounds(0.5, 0.8), next_batch=20) is None
    reason = stop_reason(rule, rounds(0.5, 0.8, 0.93, 0.7), next_batch=20)
    assert reason == "target_score 0.9 reached: best 0.93 in round 2"


def test_patience_counts_rounds_without_improvement_of_the_best() -> None:
    rule = StopRule(patience_rounds=2)
    assert stop_reason(rule, rounds(0.5, 0.6, 0.6), next_batch=20) is None  # equal is no gain
    reason = stop_reason(rule, rounds(0.5, 0.6, 0.6, 0.55), next_batch=20)
    assert (
        reason == "patience_rounds 2 reached: the best 0.6 (round 1) did not improve for 2 rounds"
    )
    assert stop_reason(rule, rounds(0.5, 0.6, 0.6, 0.7), next_batch=20) is None


def test_max_oracle_calls_stops_before_a_batch_would_exceed_it() -> None:
    rule = StopRule(max_oracle_calls=50)
    assert stop_reason(rule, rounds(0.1, 0.2), next_batch=20) is None  # 30 + 20 = 50: allowed
    reason = stop_reason(rule, rounds(0.1, 0.2, 0.3), next_batch=20)
    assert reason == (
        "max_oracle_calls 50 reached: 50 oracle calls by round 2, and the next "
        "batch of 20 would exceed it"
    )


def test_no_rule_and_no_labels_never_stop() -> None:
    assert stop_reason(StopRule(), rounds(0.1, 0.9), next_batch=20) is None
    assert stop_reason(StopRule(target_score=0.5), rounds(None, None), next_batch=20) is None
    assert not StopRule().active and StopRule(patience_rounds=1).active


def test_invalid_rules_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="patience_rounds must be at least 1"):
        StopRule(patience_rounds=0)
