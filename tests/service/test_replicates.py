"""Replicates: a repeated sequence is stored as another measurement, its label is the mean of
its current replicates (with n and standard error in the export and the history), the preview
reports replicates and flags far ones, and a correction supersedes one measurement."""

from __future__ import annotations

import csv
import io
import math

import pytest
from sqlalchemy import select

from api.models import Campaign, Sequence
from tests.service.test_uploads import wetlab
from worker import rows as worker_rows

SEED = (
    b"sequence,score\n"
    b"ACDEFG,0.4\nACDEFG,0.5\nACDEFG,0.6\n"  # technical replicates
    b"CCCCCC,1.0\nCCCCCC,1.1\nCCCCCC,0.9\nCCCCCC,1.05\nCCCCCC,5.0\n"  # one far off
    b"GGGGGG,0.2\n"
)


def _preview(client, cid: int, data: bytes):  # type: ignore[no-untyped-def]
    return client.post(f"/campaigns/{cid}/uploads", files={"file": ("s.csv", data, "text/csv")})


def test_the_preview_reports_replicates_and_flags_the_far_one(client) -> None:
    cid = wetlab(client)
    r = _preview(client, cid, SEED)
    assert r.status_code == 201, r.text
    rep = r.json()["report"]
    assert rep["rejected"] == 0 and rep["new_measurements"] == 9
    assert (rep["replicates"]["sequences"], rep["replicates"]["measurements"]) == (2, 8)
    assert rep["replicates"]["max_spread"] == pytest.approx(4.1)
    assert [(o["row"], o["sequence"]) for o in rep["replicates"]["outliers"]] == [(9, "CCCCCC")]


def test_a_stored_measurement_the_files_replicates_set_apart_is_flagged_by_its_id(client) -> None:
    cid = wetlab(client)
    first = _preview(client, cid, b"sequence,score\nCCCCCC,5.0\nGGGGGG,0.2\n").json()
    assert client.post(f"/campaigns/{cid}/uploads/{first['id']}/commit").status_code == 200
    sid = next(
        s
        for s in client.get(f"/campaigns/{cid}/sequences").json()["items"]
        if s["sequence"] == "CCCCCC"
    )["sequence_id"]
    (stored,) = client.get(f"/campaigns/{cid}/sequences/{sid}/history").json()["items"]
    r = _preview(client, cid, b"sequence,score\nCCCCCC,1.0\nCCCCCC,1.1\nCCCCCC,0.9\n")
    assert r.status_code == 201, r.text
    rep = r.json()["report"]["replicates"]
    assert (rep["sequences"], rep["measurements"]) == (1, 4)
    assert rep["outliers"] == [
        {
            "row": None,
            "measurement_id": stored["id"],
            "sequence": "CCCCCC",
            "value": 5.0,
            "median": pytest.approx(1.05),
        }
    ]


def test_the_label_is_the_mean_of_current_replicates_everywhere(client, session_factory) -> None:
    cid = wetlab(client)
    up = _preview(client, cid, SEED).json()
    assert client.post(f"/campaigns/{cid}/uploads/{up['id']}/commit").status_code == 200
    export = list(csv.DictReader(io.StringIO(client.get(f"/campaigns/{cid}/export").text)))
    acdefg = [row for row in export if row["sequence"] == "ACDEFG"]
    assert len(acdefg) == 3  # every measurement is a row
    assert [float(row["label"]) for row in acdefg] == pytest.approx([0.5] * 3)
    assert {row["replicates"] for row in acdefg} == {"3"}
    assert float(acdefg[0]["label_se"]) == pytest.approx(0.1 / math.sqrt(3))
    with session_factory() as s:
        sid = s.scalar(
            select(Sequence.id).where(Sequence.campaign_id == cid, Sequence.text == "ACDEFG")
        )
        fed = worker_rows.labels(s, cid, unobserved_only=True)  # what the optimizer is told
    assert sorted(fed.texts) == ["ACDEFG", "CCCCCC", "GGGGGG"] and len(fed.ids) == 9
    assert fed.values[fed.texts.index("ACDEFG")] == pytest.approx(0.5)
    h = client.get(f"/campaigns/{cid}/sequences/{sid}/history").json()
    assert (h["replicates"], h["label"]) == (3, pytest.approx(0.5))
    seed_round = client.get(f"/campaigns/{cid}/metrics").json()["rounds"][0]
    assert seed_round["best_label"] == pytest.approx(1.81)  # CCCCCC, its far replicate kept
    assert (seed_round["best_label_n"], seed_round["replicated"]) == (5, 2)
    assert seed_round["best_label_se"] == pytest.approx(0.7982, abs=1e-4)


def test_a_correction_supersedes_one_replicate(client) -> None:
    cid = wetlab(client)
    up = _preview(client, cid, SEED).json()
    client.post(f"/campaigns/{cid}/uploads/{up['id']}/commit")
    sid = next(
        s
        for s in client.get(f"/campaigns/{cid}/sequences", params={"limit": 50}).json()["items"]
        if s["sequence"] == "ACDEFG"
    )["sequence_id"]
    h = client.get(f"/campaigns/{cid}/sequences/{sid}/history").json()
    ids = [i["id"] for i in h["items"]]
    r = client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections",
        json={"score": 0.9, "note": "pipetting error"},
    )
    assert r.status_code == 409 and "measurement_id" in r.json()["detail"]
    r = client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections",
        json={"score": 0.9, "note": "pipetting error", "measurement_id": ids[0]},
    )
    assert r.status_code == 201, r.text
    h = r.json()
    assert h["replicates"] == 3 and h["label"] == pytest.approx((0.9 + 0.5 + 0.6) / 3)
    assert [i["current"] for i in h["items"]] == [False, True, True, True]


def test_a_ga_campaign_runs_on_seed_data_with_replicates(
    client, runtime, publisher, session_factory
) -> None:
    from tests.conftest import drain

    cid = wetlab(client)
    rows = [
        ("".join("ACDEFG"[(i * 7 + j) % 6] for j in range(6)), 0.1 * (i % 5)) for i in range(30)
    ]
    data = "sequence,score\n" + "".join(f"{s},{v}\n{s},{v + 0.05}\n" for s, v in rows)
    assert (
        client.post(
            f"/campaigns/{cid}/measurements", files={"file": ("s.csv", data.encode(), "text/csv")}
        ).status_code
        == 201
    )
    drain(runtime, publisher)
    assert client.get(f"/campaigns/{cid}").json()["status"] == "awaiting_labels"

    # Another replicate of a seed sequence arrives with the first batch's results: the next
    # step's optimizer holds that sequence once, with the mean of all its replicates.
    seq = rows[1][0]
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    batch = client.get(f"/campaigns/{cid}/batches/{bid}").json()
    results = "candidate_id,score\n" + "".join(
        f"{c['candidate_id']},0.3\n" for c in batch["candidates"]
    )
    for url, body in (
        (f"/campaigns/{cid}/measurements", f"sequence,score\n{seq},0.9\n"),
        (f"/campaigns/{cid}/batches/{bid}/results", results),
    ):
        r = client.post(url, files={"file": ("r.csv", body.encode(), "text/csv")})
        assert r.status_code == 201, r.text
    drain(runtime, publisher)
    with session_factory() as s:
        state = worker_rows.round_state(s, cid, 2)
        key = worker_rows.CampaignView.of(s.get(Campaign, cid)).keys([seq])[0]
    assert state is not None
    told = dict(zip(map(tuple, state["labels"]["sequences"]), state["labels"]["values"]))
    assert len(told) == len(state["labels"]["sequences"])  # each sequence once
    replicates = [x for t, v in rows if t == seq for x in (v, v + 0.05)] + [0.9]
    assert told[key] == pytest.approx(sum(replicates) / len(replicates))


def test_the_candidate_page_shows_its_sequences_label_with_n_and_se(
    client, runtime, publisher
) -> None:
    from tests.service.test_candidates import seeded_batch

    cid, batch = seeded_batch(client, runtime, publisher)
    cand = batch["candidates"][0]
    for score in ("0.2", "0.4"):  # the result, then a re-test sent as more data
        r = client.post(
            f"/campaigns/{cid}/batches/{batch['id']}/results"
            if score == "0.2"
            else f"/campaigns/{cid}/measurements",
            files={
                "file": (
                    "r.csv",
                    (
                        f"candidate_id,score\n{cand['candidate_id']},{score}\n"
                        if score == "0.2"
                        else f"sequence,score\n{cand['sequence']},{score}\n"
                    ).encode(),
                    "text/csv",
                )
            },
        )
        assert r.status_code == 201, r.text
    detail = client.get(f"/campaigns/{cid}/candidates/{cand['candidate_id']}").json()
    assert detail["score"] == 0.2 and detail["replicates"] == 2
    assert detail["label"] == pytest.approx(0.3) and detail["label_se"] == pytest.approx(0.1)
