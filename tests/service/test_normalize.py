"""Per-batch normalisation for plate effects: the optimizer learns each batch's scores against
the mean of that batch's control measurements; raw values are kept and shown beside them."""

from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import drain
from tests.service.test_uploads import csv_bytes, seed_rows, wetlab
from worker import rows as worker_rows


def _labelled_batch(client, runtime, publisher, normalize: str, control_score: float):  # type: ignore[no-untyped-def]
    parent = seed_rows()[0][0]
    cid = wetlab(
        client,
        optimizer={"kind": "ga", "mutation_prob": 0.3, "controls": [parent]},
        normalize=normalize,
        seed=5,
    )
    r = client.post(
        f"/campaigns/{cid}/measurements",
        files={"file": ("seed.csv", csv_bytes("sequence,score", seed_rows()), "text/csv")},
    )
    assert r.status_code == 201, r.text
    drain(runtime, publisher)
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    batch = client.get(f"/campaigns/{cid}/batches/{bid}").json()
    results = [
        (c["candidate_id"], control_score if c["is_control"] else 1.0) for c in batch["candidates"]
    ]
    r = client.post(
        f"/campaigns/{cid}/batches/{bid}/results",
        files={"file": ("r.csv", csv_bytes("candidate_id,score", results), "text/csv")},
    )
    assert r.status_code == 201, r.text
    return cid, bid, [c["sequence"] for c in batch["candidates"] if not c["is_control"]]


@pytest.mark.parametrize(
    ("mode", "expected"), [("control_ratio", 0.5), ("control_difference", -1.0), ("none", 1.0)]
)
def test_the_optimizer_learns_batch_scores_against_the_batch_controls(
    client, runtime, publisher, session_factory, mode: str, expected: float
) -> None:
    cid, bid, texts = _labelled_batch(client, runtime, publisher, mode, control_score=2.0)
    with session_factory() as s:
        told = worker_rows.labels(s, cid, unobserved_only=False)
    learned = {t: v for t, v in zip(told.texts, told.values)}
    assert [learned[t] for t in texts] == pytest.approx([expected] * len(texts))
    seed = dict(seed_rows())
    assert all(learned[t] == pytest.approx(v) for t, v in seed.items() if t not in texts)  # raw
    export = list(csv.DictReader(io.StringIO(client.get(f"/campaigns/{cid}/export").text)))
    mine = [
        row
        for row in export
        if row["batch_id"] == str(bid) and row["sequence"] in texts and row["score"]
    ]
    assert mine and {float(row["score"]) for row in mine} == {1.0}  # raw values kept
    if mode != "none":
        assert [float(row["normalized"]) for row in mine] == pytest.approx([expected] * len(mine))
    else:
        assert {row["normalized"] for row in mine} == {""}


def test_normalisation_needs_controls(client) -> None:
    r = client.post(
        "/campaigns",
        json={
            "name": "n",
            "oracle": {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6},
            "optimizer": {"kind": "ga"},
            "normalize": "control_ratio",
        },
    )
    assert r.status_code == 422 and "controls" in r.json()["detail"]
