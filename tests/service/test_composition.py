"""Batch composition controls in the optimizer config (issue 8): ``min_hamming`` and ``exclude``,
with what they removed recorded in the round's proposal metrics."""

from __future__ import annotations

from typing import Any

from tests.conftest import drain
from tests.service.test_uploads import csv_bytes, seed_rows, wetlab


def first_batch(client, runtime, publisher, optimizer: dict[str, Any]) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    cid = wetlab(client, optimizer=optimizer, seed=5)
    r = client.post(
        f"/campaigns/{cid}/measurements",
        files={"file": ("seed.csv", csv_bytes("sequence,score", seed_rows()), "text/csv")},
    )
    assert r.status_code == 201, r.text
    drain(runtime, publisher)
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    return cid, [
        c["sequence"] for c in client.get(f"/campaigns/{cid}/batches/{bid}").json()["candidates"]
    ]


def distance(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b))


def composition(client, cid: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return client.get(f"/campaigns/{cid}/metrics").json()["rounds"][1]["proposal"]["composition"]


def test_min_hamming_keeps_candidates_apart_from_each_other_and_from_measured(
    client, runtime, publisher
) -> None:
    ga = {"kind": "ga", "mutation_prob": 0.3}
    cid, plain = first_batch(client, runtime, publisher, ga)
    cid2, spaced = first_batch(client, runtime, publisher, {**ga, "min_hamming": 3})
    seeds = [s for s, _ in seed_rows()]
    assert spaced and len(spaced) <= len(plain)
    for i, a in enumerate(spaced):
        assert all(distance(a, b) >= 3 for b in spaced[i + 1 :])
        assert all(distance(a, s) >= 3 for s in seeds)
    info = composition(client, cid2)
    assert info["min_hamming"] == 3 and info["too_close"] == len(plain) - len(spaced)
    assert composition(client, cid)["too_close"] == 0


def test_excluded_sequences_are_never_proposed(client, runtime, publisher) -> None:
    ga = {"kind": "ga", "mutation_prob": 0.3}
    _, plain = first_batch(client, runtime, publisher, ga)
    cid, batch = first_batch(client, runtime, publisher, {**ga, "exclude": plain[:2]})
    assert batch == plain[2:]  # the same proposal (same seed) less the excluded
    assert composition(client, cid)["excluded"] == 2
    bad = client.post(
        "/campaigns",
        json={
            "name": "x",
            "oracle": {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6},
            "optimizer": {**ga, "exclude": ["ACDEFX"]},
            "batch_size": 20,
        },
    )
    assert bad.status_code == 422 and "exclude" in bad.json()["detail"]


def test_controls_join_every_batch_outside_the_budget_and_keep_their_result(
    client, runtime, publisher, session_factory
) -> None:
    from sqlalchemy import func, select

    from api.models import Measurement

    seeds = seed_rows()
    best = max(seeds, key=lambda r: r[1])[0]
    parent = seeds[0][0] if seeds[0][0] != best else seeds[1][0]
    cid, _texts = first_batch(
        client,
        runtime,
        publisher,
        {"kind": "ga", "mutation_prob": 0.3, "controls": [parent, "best"]},
    )
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    batch = client.get(f"/campaigns/{cid}/batches/{bid}").json()
    controls = [c for c in batch["candidates"] if c["is_control"]]
    assert [c["sequence"] for c in controls] == [parent, best]
    assert batch["size"] == len(batch["candidates"]) - 2  # not counted against the budget
    with session_factory() as s:
        before = s.scalar(
            select(func.count()).select_from(Measurement).where(Measurement.campaign_id == cid)
        )
    rows = [(c["candidate_id"], 0.5) for c in batch["candidates"]]
    r = client.post(
        f"/campaigns/{cid}/batches/{bid}/results",
        files={"file": ("r.csv", csv_bytes("candidate_id,score", rows), "text/csv")},
    )
    assert r.status_code == 201, r.text
    assert (
        r.json()["batch_status"] == "labelled"
        and r.json()["report"]["new_measurements"] == batch["size"]
    )
    detail = client.get(f"/campaigns/{cid}/candidates/{controls[0]['candidate_id']}").json()
    assert (
        detail["status"] == "measured" and detail["control_score"] == 0.5 and detail["is_control"]
    )
    with session_factory() as s:
        after = s.scalar(
            select(func.count()).select_from(Measurement).where(Measurement.campaign_id == cid)
        )
    assert after - before == batch["size"]  # a control's result is not a second label
