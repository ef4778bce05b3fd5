"""Integrity: labels are append-only with provenance (file SHA-256, row, key, time); a correction
is a new label superseding the old one, visible in the history; limits are clear 413s; bad CSVs
at scale store nothing."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.db import session_scope, utcnow
from api.models import ApiKey, Measurement, MeasurementSource
from api.services.labs import hash_key
from tests.conftest import make_key
from tests.service.test_uploads import counts, csv_bytes, seed_rows, upload, wetlab

SEED = b"sequence,score\nACDEFG,0.5\nCCCCCC,0.25\nGGGGGG,0.75\n"


def _sid(client, cid: int, text: str) -> int:  # type: ignore[no-untyped-def]
    items = client.get(f"/campaigns/{cid}/sequences").json()["items"]
    return next(i["sequence_id"] for i in items if i["sequence"] == text)


def test_every_label_records_its_file_row_key_and_time(client, api_key, session_factory) -> None:
    cid = wetlab(client)
    assert upload(client, cid, SEED).status_code == 201
    h = client.get(f"/campaigns/{cid}/sequences/{_sid(client, cid, 'CCCCCC')}/history").json()
    (label,) = h["items"]
    assert h["current"] == label and label["current"] is True
    assert label["upload_sha256"] == hashlib.sha256(SEED).hexdigest()
    assert label["upload_row"] == 3  # spreadsheet numbering: the header is row 1
    with session_factory() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(api_key)))
    assert label["api_key_id"] == key_id and api_key.startswith(label["api_key_prefix"])
    assert label["created_at"] and label["score"] == 0.25


def test_a_correction_supersedes_the_label_and_the_history_keeps_both(
    client, session_factory
) -> None:
    cid = wetlab(client)
    upload(client, cid, SEED)
    sid = _sid(client, cid, "ACDEFG")
    r = client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections",
        json={"score": 0.9, "note": "plate 3 re-assayed"},
    )
    assert r.status_code == 201, r.text
    old, new = r.json()["items"]
    assert (old["score"], old["current"], old["superseded_by"]) == (0.5, False, new["id"])
    assert old["superseded_at"] is not None and old["upload_row"] == 2  # the old row is intact
    assert (new["score"], new["current"], new["supersedes"], new["note"]) == (
        0.9,
        True,
        old["id"],
        "plate 3 re-assayed",
    )
    assert new["api_key_id"] == old["api_key_id"] is not None
    assert r.json()["current"]["id"] == new["id"]
    # every view shows the current label, once
    seqs = client.get(f"/campaigns/{cid}/sequences").json()["items"]
    assert [s["score"] for s in seqs if s["sequence"] == "ACDEFG"] == [0.9] and len(seqs) == 3
    export = client.get(f"/campaigns/{cid}/export").text.splitlines()
    assert len(export) == 4 and sum("ACDEFG" in line for line in export) == 1
    # the same correction again adds nothing (a retried request is harmless)
    again = client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections", json={"score": 0.9, "note": "retry"}
    )
    assert again.status_code == 200 and len(again.json()["items"]) == 2
    # a second correction chains on the first; infeasible is a state, not a number
    third = client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections",
        json={"feasible": False, "score": 0.3, "note": "did not express"},
    ).json()
    assert [i["current"] for i in third["items"]] == [False, False, True]
    assert (third["current"]["feasible"], third["current"]["score"]) == (False, None)
    assert counts(session_factory, cid)[0] == 5  # 3 labels + 2 corrections, nothing deleted


def test_re_uploading_the_file_after_a_correction_changes_nothing(client) -> None:
    cid = wetlab(client)
    upload(client, cid, SEED)
    sid = _sid(client, cid, "GGGGGG")
    client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections", json={"score": 0.1, "note": "typo"}
    )
    r = upload(client, cid, SEED)
    assert (
        r.status_code == 200 and r.json()["already_uploaded"] and r.json()["status"] == "committed"
    )
    assert client.get(f"/campaigns/{cid}/sequences/{sid}/history").json()["current"]["score"] == 0.1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"score": 1.0}, 422),  # a correction needs its reason
        ({"score": 1.0, "note": ""}, 422),
        ({"score": "high", "note": "x"}, 422),
        ({"note": "no score"}, 400),
        ({"score": 1.0, "note": "x", "extra": 1}, 422),
    ],
)
def test_a_bad_correction_is_refused_and_changes_nothing(
    client, session_factory, body, status
) -> None:
    cid = wetlab(client)
    upload(client, cid, SEED)
    sid = _sid(client, cid, "ACDEFG")
    r = client.post(f"/campaigns/{cid}/sequences/{sid}/corrections", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert counts(session_factory, cid)[0] == 3


def test_corrections_and_history_of_unknown_or_other_labs_sequences_are_404(
    client, anon_client, session_factory
) -> None:
    cid = wetlab(client)
    upload(client, cid, SEED)
    sid = _sid(client, cid, "ACDEFG")
    assert client.get(f"/campaigns/{cid}/sequences/999999/history").status_code == 404
    other = {"Authorization": f"Bearer {make_key(session_factory)}"}
    assert (
        anon_client.get(f"/campaigns/{cid}/sequences/{sid}/history", headers=other).status_code
        == 404
    )
    r = anon_client.post(
        f"/campaigns/{cid}/sequences/{sid}/corrections",
        headers=other,
        json={"score": 0.0, "note": "sabotage"},
    )
    assert r.status_code == 404
    assert counts(session_factory, cid)[0] == 3
    # a sequence of another campaign of the same lab is not this campaign's
    cid2 = wetlab(client)
    assert (
        client.post(
            f"/campaigns/{cid2}/sequences/{sid}/corrections", json={"score": 1.0, "note": "x"}
        ).status_code
        == 404
    )


def test_a_sequence_holds_replicates_and_a_measurement_is_corrected_once(
    client, session_factory
) -> None:
    cid = wetlab(client)
    upload(client, cid, SEED)
    sid = _sid(client, cid, "ACDEFG")
    with session_scope(session_factory) as s:  # a second current measurement: a replicate
        s.add(
            Measurement(
                campaign_id=cid,
                sequence_id=sid,
                value=0.1,
                feasible=True,
                source=MeasurementSource.UPLOAD,
            )
        )
        s.flush()
        first = s.scalar(
            select(Measurement.id)
            .where(Measurement.sequence_id == sid)
            .order_by(Measurement.id)
            .limit(1)
        )
    # But one measurement is corrected at most once.
    with pytest.raises(IntegrityError), session_scope(session_factory) as s:
        for value in (0.2, 0.3):
            s.add(
                Measurement(
                    campaign_id=cid,
                    sequence_id=sid,
                    value=value,
                    feasible=True,
                    source=MeasurementSource.UPLOAD,
                    supersedes_id=first,
                )
            )
    with session_scope(session_factory) as s:  # a superseded row may sit beside the current one
        s.add(
            Measurement(
                campaign_id=cid,
                sequence_id=sid,
                value=0.1,
                feasible=True,
                source=MeasurementSource.UPLOAD,
                superseded_at=utcnow(),
            )
        )


# --- limits -----------------------------------------------------------------------------------


@pytest.fixture
def small_client(settings, publisher, api_key):  # type: ignore[no-untyped-def]
    """The app with small upload limits."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    small = settings.model_copy(update={"max_upload_rows": 50, "max_upload_bytes": 4096})
    with TestClient(
        create_app(small, publisher=publisher, migrate=False),
        headers={"Authorization": f"Bearer {api_key}"},
    ) as c:
        yield c


def test_a_file_over_the_row_limit_is_a_413_naming_the_row(small_client, session_factory) -> None:
    cid = wetlab(small_client)
    r = upload(small_client, cid, csv_bytes("sequence,score", seed_rows(51)))
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (
        "more than 50 data rows" in r.json()["detail"]
        and "Nothing was stored" in r.json()["detail"]
    )
    assert r.json()["errors"][0]["row"] == 52
    assert counts(session_factory, cid) == (0, 0, 0)
    assert upload(small_client, cid, csv_bytes("sequence,score", seed_rows(50))).status_code == 201


def test_a_body_over_the_size_limit_is_refused_before_it_is_read(
    small_client, session_factory
) -> None:
    cid = wetlab(small_client)
    big = b"sequence,score\n" + b"ACDEFG,1\n" * 20_000  # 180 kB, far over 4 kB + the envelope
    r = upload(small_client, cid, big)
    assert r.status_code == 413 and "LLOME_MAX_UPLOAD_BYTES" in r.json()["detail"]
    assert counts(session_factory, cid) == (0, 0, 0)


def test_a_million_row_file_is_a_413_and_stores_nothing(client, session_factory) -> None:
    cid = wetlab(client)
    data = (
        b"sequence,score\n" + b"ACDEFG,1\n" * 1_000_000
    )  # 9 MB: under the byte limit, over the rows
    r = upload(client, cid, data)
    assert r.status_code == 413, r.text[:300]
    assert counts(session_factory, cid) == (0, 0, 0)


MORE_BAD = [
    pytest.param(
        b"sequence,score\nACDEFG,-inf\n", 2, "score", "not a finite number", id="minus-inf"
    ),
    pytest.param(
        b"sequence,score\nACDEFG,1e400\n", 2, "score", "not a finite number", id="overflow-to-inf"
    ),
    pytest.param(
        b"sequence,score\nACDEFG,NaN\n", 2, "score", "not a finite number", id="NaN-capitalised"
    ),
    pytest.param(
        "sequence,score\nACDEFG,caf\u00e9\n".encode("latin-1"), None, None, "UTF-8", id="latin-1"
    ),
    pytest.param("sequence,score\nÄCDEFG,1\n".encode("latin-1"), None, None, "UTF-8", id="latin-1"),
    pytest.param(
        b"sequence,score\nACDEFG,1,,\n", 2, None, "4 cells, expected 2", id="trailing-commas"
    ),
    pytest.param(b'sequence,score\n"ACD"EFG",1\n', 2, None, "", id="stray-quote"),
    pytest.param(
        b"sequence,score,\nACDEFG,1,\n", 1, None, "empty header", id="empty-header-column"
    ),
    pytest.param(
        b"Sequence,SCORE,sequence\nACDEFG,1,ACDEFG\n",
        1,
        "sequence",
        "appears twice",
        id="duplicate-column",
    ),
    pytest.param(b"\n\n\n", 1, None, "empty", id="only-newlines"),
    pytest.param(
        b'sequence,score\n=HYPERLINK("x"),1\n',
        2,
        "sequence",
        "not in the alphabet",
        id="formula-cell",
    ),
]


@pytest.mark.parametrize(("data", "row", "column", "reason"), MORE_BAD)
def test_more_malformed_files_are_4xx_naming_row_and_column_and_store_nothing(
    client, session_factory, data: bytes, row: int | None, column: str | None, reason: str
) -> None:
    cid = wetlab(client)
    r = upload(client, cid, data)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(
        e["row"] == row and e["column"] == column and reason in e["reason"]
        for e in r.json()["errors"]
    ), r.json()["errors"]
    assert counts(session_factory, cid) == (0, 0, 0)


def test_quoted_cells_crlf_and_a_bom_are_read_as_plain_values(client) -> None:
    cid = wetlab(client)
    data = '\ufeffsequence,score\r\n"ACDEFG","0.5"\r\n CCCCCC , 1e-3 \r\n'.encode()
    r = upload(client, cid, data)
    assert r.status_code == 201, r.text
    scores = {
        s["sequence"]: s["score"] for s in client.get(f"/campaigns/{cid}/sequences").json()["items"]
    }
    assert scores == {"ACDEFG": 0.5, "CCCCCC": 0.001}
