"""CSV uploads: seed data and batch results. Every bad file is a 4xx naming the row and the
reason, and nothing is written; the same file twice is stored once."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import func, select

from api.models import Measurement, Sequence, Upload
from api.services.jobs import TaskName
from tests.conftest import drain

ALPHABET = "ACDEFG"
LENGTH = 6


def seed_rows(n: int = 30, seed: int = 0) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    seqs: dict[str, float] = {}
    while len(seqs) < n:
        seqs["".join(rng.choice(ALPHABET) for _ in range(LENGTH))] = round(rng.random(), 4)
    return list(seqs.items())


def csv_bytes(header: str, rows: list[Any]) -> bytes:
    lines = [header] + [",".join(str(c) for c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def upload(client, cid: int, data: bytes, name: str = "data.csv"):  # type: ignore[no-untyped-def]
    return client.post(f"/campaigns/{cid}/measurements", files={"file": (name, data, "text/csv")})


def upload_results(client, cid: int, bid: int, data: bytes):  # type: ignore[no-untyped-def]
    return client.post(
        f"/campaigns/{cid}/batches/{bid}/results", files={"file": ("r.csv", data, "text/csv")}
    )


def counts(session_factory, cid: int) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(model).where(model.campaign_id == cid))
            for model in (Measurement, Upload, Sequence)
        )


def wetlab(client, optimizer: dict[str, Any] | None = None, **overrides: Any) -> int:  # type: ignore[no-untyped-def]
    body = {
        "name": "lab",
        "oracle": {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH},
        "optimizer": optimizer or {"kind": "ga", "mutation_prob": 0.3},
        "batch_size": 20,
        "rounds": 3,
        **overrides,
    }
    r = client.post("/campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def seeded(client) -> int:  # type: ignore[no-untyped-def]
    cid = wetlab(client)
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    return cid


@pytest.fixture
def batch(client, publisher, runtime, seeded) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A wet-lab campaign whose first batch awaits labels (made by the real GA step)."""
    drain(runtime, publisher)
    assert client.get(f"/campaigns/{seeded}").json()["status"] == "awaiting_labels"
    items = client.get(f"/campaigns/{seeded}/batches").json()["items"]
    return {
        "campaign_id": seeded,
        **client.get(f"/campaigns/{seeded}/batches/{items[0]['id']}").json(),
    }


# --- seed data --------------------------------------------------------------------------------


def test_seed_csv_starts_a_waiting_wetlab_campaign(client, publisher, session_factory) -> None:
    cid = wetlab(client)
    rows = seed_rows()
    r = upload(client, cid, csv_bytes("sequence,score", rows))
    assert r.status_code == 201, r.text
    report = r.json()["report"]
    assert (report["rows"], report["new_measurements"], report["duplicates"]) == (30, 30, 0)
    assert r.json()["already_uploaded"] is False and r.json()["campaign_status"] == "generating"
    assert r.json()["status"] == "committed" and r.json()["kind"] == "measurements"
    assert publisher.names() == [TaskName.GENERATE]
    assert counts(session_factory, cid) == (30, 1, 30)


def test_uploading_the_same_measurements_twice_adds_nothing(client, session_factory) -> None:
    cid = wetlab(client)
    data = csv_bytes("sequence,score", seed_rows())
    first = upload(client, cid, data)
    assert first.status_code == 201
    again = upload(client, cid, data)
    assert again.status_code == 200
    assert again.json()["already_uploaded"] is True and again.json()["id"] == first.json()["id"]
    assert counts(session_factory, cid) == (30, 1, 30)


def test_every_stored_value_is_exactly_the_uploaded_one(client, session_factory) -> None:
    # Rows reach Postgres as COPY text written by us: floats, nulls, booleans and times must
    # come back unchanged.
    cid = wetlab(client)
    scores = ["0.1", "1e-05", "-3.5", "0.30000000000000004", "123456789.12345679", "2", "5e-324"]
    seqs = [s for s, _ in seed_rows(len(scores) + 1)]
    rows = [(s, v, "") for s, v in zip(seqs, scores)] + [(seqs[-1], "", "false")]
    r = upload(client, cid, csv_bytes("sequence,score,feasible", rows))
    assert r.status_code == 201, r.text
    with session_factory() as s:
        stored = {
            seq: (m.value, m.feasible, m.row, m.created_at)
            for m, seq in s.execute(
                select(Measurement, Sequence.text)
                .join(Sequence, Sequence.id == Measurement.sequence_id)
                .where(Measurement.campaign_id == cid)
            ).tuples()
        }
    assert {seq: v[:3] for seq, v in stored.items()} == {
        **{seq: (float(v), True, i + 2) for i, (seq, v) in enumerate(zip(seqs, scores))},
        seqs[-1]: (None, False, len(scores) + 2),
    }
    assert (
        len({v[3] for v in stored.values()}) == 1
        and next(iter(stored.values()))[3].tzinfo is not None
    )
    with session_factory() as s:  # the key that uploaded them is the upload's
        assert s.scalar(select(Upload.api_key_id).where(Upload.campaign_id == cid)) is not None


def test_copy_text_escapes_what_would_end_a_cell() -> None:
    from datetime import UTC, datetime

    from api.services.bulk import copy_cell

    assert copy_cell("a\tb\\c\nd\re") == "a\\tb\\\\c\\nd\\re"
    assert [copy_cell(v) for v in (None, True, False, 7, 0.1)] == ["\\N", "t", "f", "7", "0.1"]
    assert (
        copy_cell(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
        == "2026-01-02T03:04:05.000006+00:00"
    )


def test_overlapping_files_store_each_measurement_once(client, session_factory) -> None:
    cid = wetlab(client)
    rows = seed_rows(20)
    assert upload(client, cid, csv_bytes("sequence,score", rows[:12])).status_code == 201
    r = upload(client, cid, csv_bytes("sequence,score", rows[8:]))
    assert r.status_code == 201
    assert (r.json()["report"]["new_measurements"], r.json()["report"]["duplicates"]) == (8, 4)
    assert counts(session_factory, cid)[0] == 20


def test_headers_are_case_insensitive_a_bom_is_accepted_and_infeasible_is_a_state(client) -> None:
    cid = wetlab(client)
    data = "\ufeffSequence,SCORE,Feasible\nACDEFG,0.5,true\nGGGGGG,,false\nCCCCCC,0.1,\n".encode()
    r = upload(client, cid, data)
    assert r.status_code == 201, r.text
    seqs = client.get(f"/campaigns/{cid}/sequences").json()["items"]
    by_seq = {s["sequence"]: s for s in seqs}
    assert by_seq["GGGGGG"]["feasible"] is False and by_seq["GGGGGG"]["score"] is None
    assert by_seq["ACDEFG"]["score"] == 0.5 and by_seq["CCCCCC"]["feasible"] is True


BAD_MEASUREMENTS = [
    pytest.param(b"", 1, None, "empty", id="empty-file"),
    pytest.param(b"\xff\xfe\x00junk", None, None, "not UTF-16", id="not-utf16"),
    pytest.param(b"sequence,score\n\xc4CDEFG,1\n", None, None, "not UTF-8", id="not-utf8"),
    pytest.param(b"sequence\nACDEFG\n", 1, None, "missing column score", id="missing-score-column"),
    pytest.param(
        b"sequence,score,color\nACDEFG,1,red\n", 1, "color", "unknown column", id="unknown-column"
    ),
    pytest.param(
        b"sequence,score\nACDEFG,1,extra\n", 2, None, "3 cells, expected 2", id="ragged-row"
    ),
    pytest.param(b'sequence,score\n"ACDEFG,1\n', 2, None, "", id="unterminated-quote"),
    pytest.param(
        b"sequence,score\nACDEFG,abc\n",
        2,
        "score",
        "'abc' is not a number",
        id="score-not-a-number",
    ),
    pytest.param(
        b"sequence,score\nACDEFG,nan\n", 2, "score", "not a finite number", id="score-nan"
    ),
    pytest.param(
        b"sequence,score\nACDEFG,inf\n", 2, "score", "not a finite number", id="score-inf"
    ),
    pytest.param(b"sequence,score\nACDEFG,\n", 2, "score", "score is empty", id="score-missing"),
    pytest.param(
        b"sequence,score\nACDXYZ,1\n", 2, "sequence", "not in the alphabet", id="wrong-alphabet"
    ),
    pytest.param(
        b"sequence,score\nACDEF,1\n", 2, "sequence", "length 5, expected 6", id="wrong-length"
    ),
    pytest.param(
        b"sequence,score,feasible\nACDEFG,1,maybe\n",
        2,
        "feasible",
        "not true or false",
        id="bad-feasible",
    ),
    pytest.param(b"sequence,score\n", 2, None, "no data rows", id="header-only"),
]


@pytest.mark.parametrize(("data", "row", "column", "reason"), BAD_MEASUREMENTS)
def test_a_bad_measurements_file_is_a_4xx_naming_row_and_reason_and_stores_nothing(
    client, session_factory, data: bytes, row: int | None, column: str | None, reason: str
) -> None:
    cid = wetlab(client)
    r = upload(client, cid, data)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    errors = r.json()["errors"]
    assert any(
        e["row"] == row and e["column"] == column and reason in e["reason"] for e in errors
    ), errors
    assert "Nothing was stored" in r.json()["detail"]
    assert counts(session_factory, cid) == (0, 0, 0)
    assert client.get(f"/campaigns/{cid}").json()["status"] == "created"


def test_one_bad_row_among_good_ones_stores_nothing_and_lists_every_error(
    client, session_factory
) -> None:
    cid = wetlab(client)
    rows = [(s, v) for s, v in seed_rows(10)]
    rows[3] = (rows[3][0], "high")
    rows[7] = ("ACDEFGA", 0.1)
    r = upload(client, cid, csv_bytes("sequence,score", rows))
    assert r.status_code == 422
    assert {(e["row"], e["column"]) for e in r.json()["errors"]} == {(5, "score"), (9, "sequence")}
    assert counts(session_factory, cid) == (0, 0, 0)


def test_a_new_score_for_a_stored_sequence_is_a_replicate(client, session_factory) -> None:
    cid = wetlab(client)
    assert upload(client, cid, b"sequence,score\nACDEFG,0.5\n").status_code == 201
    r = upload(client, cid, b"sequence,score\nCCCCCC,0.2\nACDEFG,0.7\n")
    assert r.status_code == 201, r.text
    assert r.json()["report"]["replicates"]["sequences"] == 1
    assert counts(session_factory, cid) == (3, 2, 2)


def test_a_file_over_the_size_limit_is_a_413(client, settings) -> None:
    cid = wetlab(client)
    big = b"sequence,score\n" + b"ACDEFG,1\n" * (settings.max_upload_bytes // 9 + 2)
    r = upload(client, cid, big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


# --- batches and results ------------------------------------------------------------------------


def test_the_batch_lists_candidates_as_json_and_csv(client, batch) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    assert batch["status"] == "awaiting_labels" and batch["round"] == 1
    assert batch["size"] == len(batch["candidates"]) == batch["remaining"] > 0
    for c in batch["candidates"]:
        assert len(c["sequence"]) == LENGTH and set(c["sequence"]) <= set(ALPHABET)
    as_csv = client.get(f"/campaigns/{cid}/batches/{bid}", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = as_csv.text.strip().split("\n")
    assert lines[0] == "candidate_id,sequence,score,feasible"
    assert lines[1].split(",")[:2] == [
        str(batch["candidates"][0]["candidate_id"]),
        batch["candidates"][0]["sequence"],
    ]
    by_accept = client.get(f"/campaigns/{cid}/batches/{bid}", headers={"Accept": "text/csv"})
    assert by_accept.text == as_csv.text
    # the seed sequences are never proposed again
    seeds = {s for s, _ in seed_rows()}
    assert not seeds & {c["sequence"] for c in batch["candidates"]}


def test_results_complete_the_batch_and_start_the_next_round(
    client, publisher, runtime, batch, session_factory
) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    publisher.sent.clear()
    cands = batch["candidates"]
    first = csv_bytes("candidate_id,score", [(c["candidate_id"], 0.5) for c in cands[:3]])
    r = upload_results(client, cid, bid, first)
    assert r.status_code == 201, r.text
    assert (r.json()["report"]["new_measurements"], r.json()["remaining"]) == (3, len(cands) - 3)
    assert r.json()["batch_status"] == "awaiting_labels" and publisher.sent == []
    # the rest by sequence, one infeasible
    rest = [(c["sequence"], 0.25, "true") for c in cands[3:]]
    rest[0] = (rest[0][0], "", "false")
    r = upload_results(client, cid, bid, csv_bytes("sequence,score,feasible", rest))
    assert r.status_code == 201, r.text
    assert r.json()["remaining"] == 0 and r.json()["batch_status"] == "labelled"
    assert r.json()["campaign_status"] == "generating"
    assert publisher.names() == [TaskName.GENERATE]
    drain(runtime, publisher)
    batches = client.get(f"/campaigns/{cid}/batches").json()["items"]
    assert [b["round"] for b in batches] == [2, 1]  # newest first
    assert client.get(f"/campaigns/{cid}").json()["status"] == "awaiting_labels"
    assert counts(session_factory, cid)[0] == 30 + len(cands)


def test_uploading_the_same_results_twice_adds_nothing(client, batch, session_factory) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    data = csv_bytes("candidate_id,score", [(c["candidate_id"], 0.1) for c in batch["candidates"]])
    first = upload_results(client, cid, bid, data)
    assert first.status_code == 201
    before = counts(session_factory, cid)
    again = upload_results(client, cid, bid, data)
    assert again.status_code == 200 and again.json()["already_uploaded"] is True
    assert again.json()["id"] == first.json()["id"]
    assert counts(session_factory, cid) == before


def test_results_for_candidates_already_measured_count_as_duplicates(client, batch) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    c0, c1 = batch["candidates"][:2]
    assert (
        upload_results(
            client, cid, bid, csv_bytes("candidate_id,score", [(c0["candidate_id"], 0.3)])
        ).status_code
        == 201
    )
    r = upload_results(
        client,
        cid,
        bid,
        csv_bytes("candidate_id,score", [(c0["candidate_id"], 0.3), (c1["candidate_id"], 0.4)]),
    )
    assert r.status_code == 201 and (
        r.json()["report"]["new_measurements"],
        r.json()["report"]["duplicates"],
    ) == (1, 1)


def _bad_results(batch: dict[str, Any]) -> list[Any]:
    c = batch["candidates"]
    a, b = c[0]["candidate_id"], c[1]["candidate_id"]
    return [
        (
            csv_bytes("candidate_id,score", [(a, 0.1), (999_999, 0.2)]),
            3,
            "candidate_id",
            "unknown candidate_id 999999",
        ),
        (
            csv_bytes("candidate_id,score", [(a, 0.1), (b, 0.2), (a, 0.1)]),
            4,
            "candidate_id",
            "repeats row 2",
        ),
        (csv_bytes("candidate_id,score", [(a, "n/a")]), 2, "score", "is not a number"),
        (csv_bytes("candidate_id,score", [("x12", 0.1)]), 2, "candidate_id", "not an integer"),
        (csv_bytes("sequence,score", [("GGGGGX", 0.1)]), 2, "sequence", "not a candidate of batch"),
        (
            csv_bytes("candidate_id,sequence,score", [(a, c[1]["sequence"], 0.1)]),
            2,
            "sequence",
            f"not candidate {a}",
        ),
        (csv_bytes("score", [(0.1,)]), 1, None, "missing column candidate_id or sequence"),
        (csv_bytes("candidate_id,score,plate", [(a, 0.1, "P1")]), 1, "plate", "unknown column"),
    ]


def test_bad_results_files_are_4xx_naming_row_and_reason_and_store_nothing(
    client, batch, session_factory
) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    before = counts(session_factory, cid)
    for data, row, column, reason in _bad_results(batch):
        r = upload_results(client, cid, bid, data)
        assert 400 <= r.status_code < 500, r.text
        errors = r.json()["errors"]
        assert any(
            e["row"] == row and e["column"] == column and reason in e["reason"] for e in errors
        ), (reason, errors)
        assert counts(session_factory, cid) == before
    assert client.get(f"/campaigns/{cid}/batches/{bid}").json()["remaining"] == batch["size"]


def test_results_for_a_batch_not_awaiting_labels_are_a_409_and_store_nothing(
    client, batch, session_factory
) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    cands = batch["candidates"]
    assert (
        upload_results(
            client,
            cid,
            bid,
            csv_bytes("candidate_id,score", [(c["candidate_id"], 0.2) for c in cands]),
        ).status_code
        == 201
    )
    before = counts(session_factory, cid)
    r = upload_results(
        client, cid, bid, csv_bytes("candidate_id,score", [(cands[0]["candidate_id"], 0.9)])
    )
    assert r.status_code == 409
    assert "not awaiting labels" in r.json()["detail"]
    assert counts(session_factory, cid) == before


def test_a_pending_candidate_cannot_be_uploaded_as_plain_measurements(
    client, batch, session_factory
) -> None:
    cid, bid = batch["campaign_id"], batch["id"]
    before = counts(session_factory, cid)
    seq = batch["candidates"][0]["sequence"]
    r = upload(client, cid, csv_bytes("sequence,score", [(seq, 0.5)]))
    assert r.status_code == 422 and f"/batches/{bid}/results" in r.json()["errors"][0]["reason"]
    assert counts(session_factory, cid) == before


def test_an_unknown_batch_is_a_404(client, seeded) -> None:
    r = upload_results(client, seeded, 123456, b"candidate_id,score\n1,0.1\n")
    assert r.status_code == 404 and "no batch 123456" in r.json()["detail"]


def test_sequences_page_through_every_labelled_sequence(client, seeded) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/campaigns/{seeded}/sequences", params=params).json()
        seen += [s["sequence"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [s for s, _ in seed_rows()]


def test_export_streams_every_sequence_with_escaped_cells(client, batch) -> None:
    cid = batch["campaign_id"]
    r = client.get(f"/campaigns/{cid}/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().split("\n")
    assert lines[0].startswith("sequence_id,status,sequence,score")
    assert len(lines) - 1 == 30 + batch["size"]
    statuses = {line.split(",")[1] for line in lines[1:]}
    assert statuses == {"measured", "proposed"}


def test_export_escapes_cells_a_spreadsheet_would_run(client) -> None:
    cid = client.post(
        "/campaigns",
        json={
            "name": "x",
            "oracle": {"kind": "wetlab", "alphabet": "=+-@AC", "length": 3},
            "optimizer": {"kind": "ga"},
            "batch_size": 20,
        },
    ).json()["id"]
    assert upload(client, cid, b"sequence,score\n=AC,0.5\n-AC,-0.25\n").status_code == 201
    lines = client.get(f"/campaigns/{cid}/export").text.strip().split("\n")[1:]
    cells = [line.split(",") for line in lines]
    assert {c[2] for c in cells} == {"'=AC", "'-AC"}
    assert "-0.25" in {c[3] for c in cells}  # numbers stay numbers
    # an exported (escaped) sequence uploads back as the same sequence
    r = upload(client, cid, b"sequence,score\n'=AC,0.5\n")
    assert r.status_code == 201 and r.json()["report"]["duplicates"] == 1


def test_metrics_and_plot_for_a_wetlab_campaign(client, seeded) -> None:
    m = client.get(f"/campaigns/{seeded}/metrics").json()
    assert m["objective"] == "score"
    assert m["rounds"][0]["round"] == 0 and m["rounds"][0]["labelled"] == 30
    assert m["rounds"][0]["best_so_far"] == max(v for _, v in seed_rows())
    png = client.get(f"/campaigns/{seeded}/plot.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
