"""Candidates as molecules in a lab (issue 8): the template round trip, lab states and their
enforced moves, failed expression learned from as infeasible, never re-proposing a sequence,
expiry after label_ttl on a controllable clock. One round trip also runs on SQLite (the
embedded default's backend)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from api.db import utcnow
from api.models import Measurement
from tests.conftest import RecordingPublisher, drain, make_key
from tests.service.test_uploads import ALPHABET, LENGTH, csv_bytes, seed_rows, wetlab


def seeded_batch(client, runtime, publisher, **overrides: Any) -> tuple[int, dict[str, Any]]:  # type: ignore[no-untyped-def]
    cid = wetlab(client, **overrides)
    r = client.post(
        f"/campaigns/{cid}/measurements",
        files={"file": ("seed.csv", csv_bytes("sequence,score", seed_rows()), "text/csv")},
    )
    assert r.status_code == 201, r.text
    drain(runtime, publisher)
    newest = client.get(f"/campaigns/{cid}/batches").json()["items"][0]
    assert newest["status"] == "awaiting_labels"
    return cid, client.get(f"/campaigns/{cid}/batches/{newest['id']}").json()


def template(client, cid: int, bid: int) -> tuple[list[str], list[dict[str, str]]]:  # type: ignore[no-untyped-def]
    r = client.get(f"/campaigns/{cid}/batches/{bid}/template.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    return list(reader.fieldnames or []), list(reader)


def filled(header: list[str], rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


def upload_commit(client, cid: int, bid: int, data: bytes) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    up = client.post(
        f"/campaigns/{cid}/uploads",
        files={"file": ("t.csv", data, "text/csv")},
        data={"batch_id": str(bid)},
    )
    assert up.status_code == 201, up.text
    assert up.json()["report"]["rejected"] == 0, up.json()["report"]
    done = client.post(f"/campaigns/{cid}/uploads/{up.json()['id']}/commit")
    assert done.status_code == 200, done.text
    return done.json()


def status_of(client, cid: int, cand_id: int) -> str:  # type: ignore[no-untyped-def]
    return client.get(f"/campaigns/{cid}/candidates/{cand_id}").json()["status"]


def template_round_trip(client, runtime, publisher, session_factory) -> None:  # type: ignore[no-untyped-def]
    """Download the template, fill it in (one failed expression, one failed assay), upload it
    unchanged in shape; release and re-measure the failed assay; the next round learns from the
    failed expression as an infeasible label."""
    cid, batch = seeded_batch(client, runtime, publisher)
    bid, cands = batch["id"], batch["candidates"]
    header, rows = template(client, cid, bid)
    assert header == ["candidate_id", "sequence", "mutant", "score", "status"]
    assert [int(r["candidate_id"]) for r in rows] == [c["candidate_id"] for c in cands]
    assert all(r["score"] == "" and r["status"] == "" for r in rows)
    fasta = client.get(f"/campaigns/{cid}/batches/{bid}/fasta").text.split("\n")
    assert fasta[0] == f">{cands[0]['candidate_id']}" and fasta[1] == cands[0]["sequence"]

    for i, r in enumerate(rows):
        r["score"] = "" if i < 2 else str(0.01 * i)
    rows[0]["status"], rows[1]["status"] = "failed_expression", "assay_failed"
    failed, retry = int(rows[0]["candidate_id"]), int(rows[1]["candidate_id"])
    done = upload_commit(client, cid, bid, filled(header, rows))
    assert done["report"]["new_measurements"] == len(rows) - 1
    assert (status_of(client, cid, failed), status_of(client, cid, retry)) == (
        "failed_expression",
        "assay_failed",
    )
    assert status_of(client, cid, int(rows[2]["candidate_id"])) == "measured"
    assert (
        client.get(f"/campaigns/{cid}/batches/{bid}").json()["remaining"] == 1
    )  # the failed assay waits

    rel = client.post(f"/campaigns/{cid}/batches/{bid}/release")
    assert rel.status_code == 200 and rel.json()["released"] == 1
    assert status_of(client, cid, retry) == "released"
    header2, rows2 = template(client, cid, bid)
    assert header2 == header and [int(r["candidate_id"]) for r in rows2] == [retry]
    rows2[0]["score"] = "0.9"
    publisher.sent.clear()
    upload_commit(client, cid, bid, filled(header2, rows2))
    assert status_of(client, cid, retry) == "measured"
    assert client.get(f"/campaigns/{cid}/batches/{bid}").json()["status"] == "labelled"
    drain(runtime, publisher)
    assert [b["round"] for b in client.get(f"/campaigns/{cid}/batches").json()["items"]] == [2, 1]
    with session_factory() as s:
        m = s.scalar(select(Measurement).where(Measurement.candidate_id == failed))
        assert m is not None and m.feasible is False and m.value is None
        assert m.observed_round == 2  # the next round's optimizer was fed it


def test_a_filled_template_uploads_unchanged_in_shape_and_failed_expression_is_learned(
    client, runtime, publisher, session_factory
) -> None:
    template_round_trip(client, runtime, publisher, session_factory)


def test_the_template_round_trip_on_sqlite(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.db import make_engine, make_sessionmaker, upgrade
    from api.main import create_app
    from worker.runtime import Runtime

    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/lab.db", redis_url=None, data_dir=tmp_path / "data"
    )
    upgrade(settings)
    publisher = RecordingPublisher()
    engine = make_engine(settings)
    factory = make_sessionmaker(engine, publisher)
    key = make_key(factory)
    runtime = Runtime(settings=settings, engine=engine, session_factory=factory, device="cpu")
    try:
        with TestClient(
            create_app(settings, publisher=publisher, migrate=False),
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            template_round_trip(client, runtime, publisher, factory)
    finally:
        engine.dispose()


def test_a_results_row_whose_mutant_is_another_candidates_is_a_422(
    client, runtime, publisher, session_factory
) -> None:
    # With a reference, the template names each candidate's mutations against it.
    cid, batch = seeded_batch(
        client,
        runtime,
        publisher,
        oracle={
            "kind": "wetlab",
            "alphabet": ALPHABET,
            "length": LENGTH,
            "reference": ALPHABET[:LENGTH],
        },
    )
    bid = batch["id"]
    header, rows = template(client, cid, bid)
    mutants = [r["mutant"] for r in rows]
    assert all(":" in m for m in mutants[:3]), mutants
    i, j = next(
        (i, j) for i in range(len(rows)) for j in range(len(rows)) if mutants[i] != mutants[j]
    )
    for r in rows:
        r["score"] = "0.5"
    rows[i]["mutant"] = mutants[j]  # a pasted-over mutant column
    r = client.post(
        f"/campaigns/{cid}/batches/{bid}/results",
        files={"file": ("r.csv", filled(header, rows), "text/csv")},
    )
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert (error["row"], error["column"]) == (i + 2, "mutant")
    assert rows[i]["candidate_id"] in error["reason"]
    with session_factory() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(Measurement).where(Measurement.batch_id == bid)
            )
            == 0
        )
    # The mutations in another order, or an empty cell, are fine.
    rows[i]["mutant"] = ":".join(reversed(mutants[i].split(":")))
    rows[j]["mutant"] = ""
    assert (
        client.post(
            f"/campaigns/{cid}/batches/{bid}/results",
            files={"file": ("r.csv", filled(header, rows), "text/csv")},
        ).status_code
        == 201
    )


def test_lab_states_only_move_forward(client, runtime, publisher) -> None:
    cid, batch = seeded_batch(client, runtime, publisher)
    bid, cands = batch["id"], batch["candidates"]
    a, b = cands[0]["candidate_id"], cands[1]["candidate_id"]
    w = client.post(f"/campaigns/{cid}/candidates/{a}/withdraw")
    assert w.status_code == 200 and w.json()["status"] == "withdrawn"
    again = client.post(f"/campaigns/{cid}/candidates/{a}/withdraw")
    assert again.status_code == 409 and "withdrawn" in again.json()["detail"]
    client.post(
        f"/campaigns/{cid}/batches/{bid}/results",
        files={"file": ("r.csv", csv_bytes("candidate_id,score", [(b, 0.4)]), "text/csv")},
    )
    assert client.post(f"/campaigns/{cid}/candidates/{b}/withdraw").status_code == 409
    report = client.post(
        f"/campaigns/{cid}/uploads",
        data={"batch_id": str(bid)},
        files={
            "file": (
                "x.csv",
                csv_bytes(
                    "candidate_id,score,status", [(a, 0.3, "measured"), (b, "", "assay_failed")]
                ),
                "text/csv",
            )
        },
    ).json()["report"]
    assert report["rejected"] == 2
    assert [e["column"] for e in report["errors"]] == ["status", "status"]
    assert "withdrawn; it cannot become measured" in report["errors"][0]["reason"]
    assert client.get(f"/campaigns/{cid}/batches/{bid}").json()["remaining"] == len(cands) - 2
    assert client.get(f"/campaigns/{cid}/candidates/999999").status_code == 404


def test_a_sequence_in_the_lab_measured_or_withdrawn_is_never_proposed_again(
    client, runtime, publisher
) -> None:
    cid, batch = seeded_batch(client, runtime, publisher, rounds=3)
    seen = {s for s, _ in seed_rows()}
    for round_ in (1, 2, 3):
        assert batch["round"] == round_
        texts = [c["sequence"] for c in batch["candidates"]]
        assert len(set(texts)) == len(texts) and not seen & set(texts)
        seen |= set(texts)
        bid, cands = batch["id"], batch["candidates"]
        for c in cands[:2]:  # withdrawn ones
            assert (
                client.post(f"/campaigns/{cid}/candidates/{c['candidate_id']}/withdraw").status_code
                == 200
            )
        rows = [(c["candidate_id"], "", "failed_expression") for c in cands[2:4]]
        rows += [(c["candidate_id"], 0.1, "") for c in cands[4:]]
        publisher.sent.clear()
        upload_commit(client, cid, bid, csv_bytes("candidate_id,score,status", rows))
        drain(runtime, publisher)
        if round_ < 3:
            newest = client.get(f"/campaigns/{cid}/batches").json()["items"][0]
            batch = client.get(f"/campaigns/{cid}/batches/{newest['id']}").json()
    assert client.get(f"/campaigns/{cid}").json()["status"] == "completed"


def test_candidates_expire_after_label_ttl_on_a_controllable_clock(
    app, client, runtime, publisher
) -> None:
    oracle = {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH, "label_ttl": "14d"}
    cid, batch = seeded_batch(client, runtime, publisher, oracle=oracle)
    bid, cands = batch["id"], batch["candidates"]
    first = cands[0]["candidate_id"]
    client.post(
        f"/campaigns/{cid}/batches/{bid}/results",
        files={"file": ("r.csv", csv_bytes("candidate_id,score", [(first, 0.4)]), "text/csv")},
    )
    start = utcnow()
    app.state.clock = lambda: start + timedelta(days=13)
    assert (
        client.post(f"/campaigns/{cid}/batches/{bid}/release").json()["released"] == len(cands) - 1
    )
    app.state.clock = lambda: start + timedelta(days=26)  # 13 days after the release
    assert client.post(f"/campaigns/{cid}/expire").json()["expired"] == 0
    app.state.clock = lambda: start + timedelta(days=27, hours=1)
    publisher.sent.clear()
    r = client.post(f"/campaigns/{cid}/expire").json()
    assert r["expired"] == len(cands) - 1 and r["campaign_status"] == "generating"
    assert status_of(client, cid, first) == "measured"
    assert {status_of(client, cid, c["candidate_id"]) for c in cands[1:]} == {"expired"}
    assert client.get(f"/campaigns/{cid}/batches/{bid}").json()["status"] == "labelled"
    late = client.post(f"/campaigns/{cid}/candidates/{cands[1]['candidate_id']}/withdraw")
    assert late.status_code == 409


@pytest.mark.parametrize("ttl", ["14", "0d", "two weeks"])
def test_a_bad_label_ttl_is_refused_at_create(client, ttl: str) -> None:
    r = client.post(
        "/campaigns",
        json={
            "name": "x",
            "oracle": {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH, "label_ttl": ttl},
            "optimizer": {"kind": "ga"},
            "batch_size": 20,
        },
    )
    assert r.status_code == 422 and "label_ttl" in r.text
