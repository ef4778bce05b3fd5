"""Stop rules end a wet-lab campaign early with a sentence naming the rule and its value, logged
as an event; metrics and the rounds export carry each round's oracle calls and step seconds."""

from __future__ import annotations

import csv
import io
from typing import Any

from tests.conftest import drain
from tests.service.test_uploads import csv_bytes, upload, upload_results, wetlab

SEED = [
    ("ACDEFG", 0.30),
    ("CCDEFG", 0.50),
    ("ACDEGG", 0.20),
    ("GCDEFA", 0.40),
    ("ACAEFG", 0.10),
    ("ACDDFG", 0.35),
    ("FCDEFG", 0.25),
    ("ACDEFF", 0.45),
    ("AGDEFG", 0.15),
    ("ACDEAG", 0.05),
]


def start(client, runtime, publisher, stop: dict[str, Any], rounds: int = 5) -> int:  # type: ignore[no-untyped-def]
    cid = wetlab(client, stop=stop, rounds=rounds)
    assert upload(client, cid, csv_bytes("sequence,score", SEED)).status_code == 201
    drain(runtime, publisher)
    return cid


def label_round(client, runtime, publisher, cid: int, score: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Upload a score for every candidate of the open batch (``score(i)``), run what follows."""
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    cands = client.get(f"/campaigns/{cid}/batches/{bid}").json()["candidates"]
    rows = [(c["candidate_id"], score(i)) for i, c in enumerate(cands)]
    r = upload_results(client, cid, bid, csv_bytes("candidate_id,score", rows))
    assert r.status_code == 201, r.text
    drain(runtime, publisher)
    return client.get(f"/campaigns/{cid}").json()


def stopped_event(client, cid: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    events = client.get(f"/campaigns/{cid}/events").json()["items"]
    return next(e for e in events if e["kind"] == "stopped")


def test_target_score_completes_the_campaign_once_the_best_reaches_it(
    client, runtime, publisher
) -> None:
    cid = start(client, runtime, publisher, {"target_score": 0.9})
    read = label_round(client, runtime, publisher, cid, lambda i: 0.2)
    assert read["status"] == "awaiting_labels" and read["stop_reason"] is None  # 0.5 < 0.9
    read = label_round(client, runtime, publisher, cid, lambda i: 0.93 if i == 3 else 0.2)
    reason = "target_score 0.9 reached: best 0.93 in round 2"
    assert read["status"] == "completed" and read["stop_reason"] == reason
    assert read["stop"] == {"target_score": 0.9, "patience_rounds": None, "max_oracle_calls": None}
    event = stopped_event(client, cid)
    assert event["to_status"] == "completed" and event["detail"] == {"stop_reason": reason}


def test_patience_stops_after_rounds_without_a_better_best(client, runtime, publisher) -> None:
    cid = start(client, runtime, publisher, {"patience_rounds": 2})
    assert (
        label_round(client, runtime, publisher, cid, lambda i: 0.4)["status"] == "awaiting_labels"
    )
    read = label_round(client, runtime, publisher, cid, lambda i: 0.5)  # equal is no improvement
    assert read["status"] == "completed"
    assert read["stop_reason"] == (
        "patience_rounds 2 reached: the best 0.5 (round 0) did not improve for 2 rounds"
    )
    assert stopped_event(client, cid)["detail"]["stop_reason"] == read["stop_reason"]


def test_max_oracle_calls_stops_before_a_batch_would_pass_it(client, runtime, publisher) -> None:
    cid = start(client, runtime, publisher, {"max_oracle_calls": 35})
    read = label_round(client, runtime, publisher, cid, lambda i: 0.1)
    calls = client.get(f"/campaigns/{cid}/metrics").json()["rounds"][-1]["oracle_calls"]
    assert calls + 20 > 35 and read["status"] == "completed"
    assert read["stop_reason"] == (
        f"max_oracle_calls 35 reached: {calls} oracle calls by round 1, "
        "and the next batch of 20 would exceed it"
    )


def test_a_campaign_without_rules_runs_all_its_rounds(client, runtime, publisher) -> None:
    cid = start(client, runtime, publisher, {}, rounds=2)
    label_round(client, runtime, publisher, cid, lambda i: 0.99)
    read = label_round(client, runtime, publisher, cid, lambda i: 0.99)
    assert read["status"] == "completed" and read["stop_reason"] is None
    assert read["progress"]["message"] == "all 2 rounds done"


def test_metrics_and_rounds_export_account_oracle_calls_and_step_seconds(
    client, runtime, publisher
) -> None:
    cid = start(client, runtime, publisher, {}, rounds=2)
    label_round(client, runtime, publisher, cid, lambda i: 0.3)
    rounds = client.get(f"/campaigns/{cid}/metrics").json()["rounds"]
    assert [r["round_oracle_calls"] for r in rounds[:1]] == [len(SEED)]
    assert rounds[1]["oracle_calls"] == len(SEED) + rounds[1]["round_oracle_calls"]
    generate = rounds[1]["cost"]["generate"]
    assert generate["wall_s"] >= 0 and generate["cpu_s"] >= 0 and generate["gpu_s"] == 0.0
    assert rounds[0]["cost"] is None  # seed data uploaded by the lab: no step ran
    r = client.get(f"/campaigns/{cid}/export", params={"table": "rounds"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(row["round"]) for row in table] == [r["round"] for r in rounds]
    assert float(table[1]["generate_cpu_s"]) == generate["cpu_s"] and table[1]["train_wall_s"] == ""
