"""Uploads previewed, then committed (issue 8): the report lists every row, the commit is all
or nothing (unless skip_rejected), the same bytes are one stored copy, and an Idempotency-Key
replays the first response."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from api.models import Campaign
from tests.service.test_uploads import counts, csv_bytes, seed_rows, wetlab


def preview(
    client,
    cid: int,
    data: bytes,
    batch_id: int | None = None,
    headers: dict | None = None,
    name: str = "data.csv",
):  # type: ignore[no-untyped-def]
    form = {"batch_id": str(batch_id)} if batch_id is not None else {}
    return client.post(
        f"/campaigns/{cid}/uploads",
        files={"file": (name, data, "text/csv")},
        data=form,
        headers=headers or {},
    )


def commit(client, cid: int, uid: int, skip: bool = False):  # type: ignore[no-untyped-def]
    return client.post(
        f"/campaigns/{cid}/uploads/{uid}/commit", params={"skip_rejected": "true"} if skip else {}
    )


def test_preview_stores_only_the_upload_and_commit_stores_every_row_once(
    client, publisher, session_factory
) -> None:
    cid = wetlab(client)
    r = preview(client, cid, csv_bytes("sequence,score", seed_rows()))
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["status"] == "previewed" and len(up["sha256"]) == 64
    report = up["report"]
    assert {
        k: report[k] for k in ("rows", "accepted", "rejected", "new_measurements", "duplicates")
    } == {"rows": 30, "accepted": 30, "rejected": 0, "new_measurements": 30, "duplicates": 0}
    assert report["errors"] == []
    assert counts(session_factory, cid) == (0, 1, 0)  # the upload itself, nothing else
    assert client.get(f"/campaigns/{cid}").json()["status"] == "created" and publisher.sent == []

    done = commit(client, cid, up["id"])
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "committed" and done.json()["committed_at"] is not None
    assert done.json()["campaign_status"] == "generating"
    assert counts(session_factory, cid) == (30, 1, 30)
    again = commit(client, cid, up["id"])
    assert again.status_code == 200 and again.json()["committed_at"] == done.json()["committed_at"]
    assert counts(session_factory, cid) == (30, 1, 30)


def test_the_same_file_twice_is_one_stored_copy_whatever_route_sends_it(
    client, session_factory
) -> None:
    cid = wetlab(client)
    data = csv_bytes("sequence,score", seed_rows(12))
    first = preview(client, cid, data)
    second = preview(client, cid, data, name="renamed.csv")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"] and second.json()["already_uploaded"] is True
    # the one-step route commits that same previewed upload
    one = client.post(f"/campaigns/{cid}/measurements", files={"file": ("d.csv", data, "text/csv")})
    assert one.status_code == 201 and one.json()["id"] == first.json()["id"]
    assert one.json()["report"]["new_measurements"] == 12 and one.json()["status"] == "committed"
    assert preview(client, cid, data).json()["status"] == "committed"
    assert counts(session_factory, cid) == (12, 1, 12)
    listed = client.get(f"/campaigns/{cid}/uploads").json()["items"]
    assert [u["id"] for u in listed] == [first.json()["id"]]
    assert listed[0]["sha256"] == first.json()["sha256"] and listed[0]["status"] == "committed"
    assert listed[0]["api_key_id"] is not None and listed[0]["created_at"]  # who and when


def test_a_half_valid_file_stores_nothing_unless_skip_rejected(client, session_factory) -> None:
    cid = wetlab(client)
    rows: list[Any] = list(seed_rows(10))
    rows[3] = (rows[3][0], "high")
    rows[7] = ("ACDEFGA", 0.1)
    rows.append(rows[0])  # a repeated row: a replicate
    up = preview(client, cid, csv_bytes("sequence,score", rows)).json()
    report = up["report"]
    assert (report["rows"], report["accepted"], report["rejected"], report["new_measurements"]) == (
        11,
        9,
        2,
        9,
    )
    assert {(e["row"], e["column"]) for e in report["errors"]} == {(5, "score"), (9, "sequence")}
    r = commit(client, cid, up["id"])
    assert r.status_code == 422 and "skip_rejected" in r.json()["detail"]
    assert {e["row"] for e in r.json()["errors"]} == {5, 9}
    assert counts(session_factory, cid) == (0, 1, 0)
    ok = commit(client, cid, up["id"], skip=True)
    assert ok.status_code == 200, ok.text
    assert (
        ok.json()["report"]["skipped_rows"] == [5, 9]
        and ok.json()["report"]["skip_rejected"] is True
    )
    assert counts(session_factory, cid) == (9, 1, 8)


def test_a_file_level_problem_is_reported_and_cannot_be_committed(client, session_factory) -> None:
    cid = wetlab(client)
    up = preview(client, cid, b"sequence,score,color\nACDEFG,1,red\n").json()
    assert up["report"]["accepted"] == 0
    assert any(
        e["column"] == "color" and "unknown column" in e["reason"] for e in up["report"]["errors"]
    )
    r = commit(client, cid, up["id"], skip=True)
    assert r.status_code == 422 and counts(session_factory, cid)[0] == 0


def test_a_stored_sequence_measured_again_is_a_replicate_and_the_same_value_a_duplicate(
    client,
) -> None:
    cid = wetlab(client)
    assert (
        client.post(
            f"/campaigns/{cid}/measurements",
            files={"file": ("a.csv", b"sequence,score\nACDEFG,0.5\n", "text/csv")},
        ).status_code
        == 201
    )
    report = preview(client, cid, b"sequence,score\nCCCCCC,0.2\nACDEFG,0.7\nACDEFG,0.5\n").json()[
        "report"
    ]
    assert (report["rejected"], report["new_measurements"], report["duplicates"]) == (0, 2, 1)
    assert report["replicates"]["sequences"] == 1


def test_the_same_idempotency_key_twice_returns_the_first_response(client, session_factory) -> None:
    body = {
        "name": "idem",
        "oracle": {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6},
        "optimizer": {"kind": "ga"},
        "batch_size": 20,
        "rounds": 2,
    }
    h = {"Idempotency-Key": "create-1"}
    a = client.post("/campaigns", json=body, headers=h)
    b = client.post("/campaigns", json=body, headers=h)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    with session_factory() as s:
        assert (
            s.scalar(select(func.count()).select_from(Campaign).where(Campaign.name == "idem")) == 1
        )
    other = client.post("/campaigns", json={**body, "rounds": 3}, headers=h)
    assert other.status_code == 422 and "different request" in other.json()["detail"]

    cid = a.json()["id"]
    data = csv_bytes("sequence,score", seed_rows(5))
    up1 = preview(client, cid, data, headers={"Idempotency-Key": "up-1"})
    up2 = preview(client, cid, data, headers={"Idempotency-Key": "up-1"})
    assert up1.status_code == up2.status_code == 201 and up1.json() == up2.json()
    assert (
        preview(
            client,
            cid,
            csv_bytes("sequence,score", seed_rows(6)),
            headers={"Idempotency-Key": "up-1"},
        ).status_code
        == 422
    )
    assert counts(session_factory, cid) == (0, 1, 0)


def test_jsonl_seed_data_in_the_authors_form_is_accepted(client, session_factory) -> None:
    cid = wetlab(client)  # alphabet ACDEFG: state 0 is A
    lines = [
        {"particle": [0, 1, 2, 3, 4, 5], "score": 0.5},
        {"particle": [5, 5, 5, 5, 5, 5], "score": None},
        {"particle": [1, 1, 1, 1, 1, 1], "score": 0.25},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    up = preview(client, cid, data, name="seed.jsonl").json()
    assert up["report"]["accepted"] == 3, up
    assert commit(client, cid, up["id"]).status_code == 200
    seqs = {s["sequence"]: s for s in client.get(f"/campaigns/{cid}/sequences").json()["items"]}
    assert (
        seqs["ACDEFG"]["score"] == 0.5
        and seqs["GGGGGG"]["feasible"] is False
        and seqs["CCCCCC"]["score"] == 0.25
    )


def test_the_one_step_routes_honour_an_idempotency_key(client, session_factory) -> None:
    cid = wetlab(client)
    data = csv_bytes("sequence,score", seed_rows(8))
    h = {"Idempotency-Key": "seed-1"}
    first = client.post(
        f"/campaigns/{cid}/measurements", files={"file": ("s.csv", data, "text/csv")}, headers=h
    )
    again = client.post(
        f"/campaigns/{cid}/measurements", files={"file": ("s.csv", data, "text/csv")}, headers=h
    )
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = client.post(
        f"/campaigns/{cid}/measurements",
        files={"file": ("s.csv", csv_bytes("sequence,score", seed_rows(9)), "text/csv")},
        headers=h,
    )
    assert other.status_code == 422
    assert counts(session_factory, cid) == (8, 1, 8)
