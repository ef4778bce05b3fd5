"""Files as labs really produce them: a file sent to the wrong target first is not stuck,
spreadsheet exports (semicolons, tabs, decimal commas, UTF-16, BOMs) are read, a file with no
readable table is a 422 at preview, and previews never committed are deleted after a while."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from api.db import session_scope, utcnow
from api.models import Measurement, Upload
from tests.service.test_candidates import filled, seeded_batch, template
from tests.service.test_uploads import csv_bytes, seed_rows, wetlab


def preview(client, cid: int, data: bytes, batch_id: int | None = None):  # type: ignore[no-untyped-def]
    form = {"batch_id": str(batch_id)} if batch_id is not None else {}
    return client.post(
        f"/campaigns/{cid}/uploads", files={"file": ("f.csv", data, "text/csv")}, data=form
    )


def _uploads(session_factory, cid: int) -> int:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(Upload).where(Upload.campaign_id == cid))


def test_the_same_bytes_for_another_target_are_another_upload(client, runtime, publisher) -> None:
    cid, batch = seeded_batch(client, runtime, publisher)
    header, rows = template(client, cid, batch["id"])
    for i, row in enumerate(rows):
        row["score"] = str(0.01 * i)
    data = filled(header, rows)
    # First sent without its batch (a natural mistake): seed data has no candidate_id column.
    first = preview(client, cid, data)
    assert first.status_code == 201 and first.json()["report"]["accepted"] == 0
    assert any("candidate_id" in e["reason"] for e in first.json()["report"]["errors"])
    # The same bytes as the batch's results are read as results, not the first upload again.
    second = preview(client, cid, data, batch_id=batch["id"])
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"] and second.json()["report"]["rejected"] == 0
    done = client.post(f"/campaigns/{cid}/uploads/{second.json()['id']}/commit")
    assert done.status_code == 200, done.text
    # And the one-step route names the same target: the same file again is that upload.
    again = client.post(
        f"/campaigns/{cid}/batches/{batch['id']}/results",
        files={"file": ("r.csv", data, "text/csv")},
    )
    assert again.status_code in (200, 201) and again.json()["id"] == second.json()["id"]


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(
            lambda t: t.replace(",", ";").replace("0.", "0,").encode(), id="semicolon-decimal-comma"
        ),
        pytest.param(lambda t: t.replace(",", "\t").encode("utf-16"), id="excel-unicode-text"),
        pytest.param(lambda t: t.replace(",", "\t").encode("utf-16-le"), id="utf-16-without-bom"),
        pytest.param(lambda t: ("\ufeff" + t).encode(), id="utf-8-bom"),
        pytest.param(lambda t: t.replace("\n", "\r\n").encode(), id="crlf"),
    ],
)
def test_spreadsheet_exports_are_read(client, session_factory, encode) -> None:  # type: ignore[no-untyped-def]
    cid = wetlab(client)
    rows = seed_rows(8)
    text = csv_bytes("sequence,score", rows).decode()
    r = client.post(
        f"/campaigns/{cid}/measurements", files={"file": ("excel.csv", encode(text), "text/csv")}
    )
    assert r.status_code == 201, r.text
    with session_factory() as s:
        values = sorted(s.scalars(select(Measurement.value).where(Measurement.campaign_id == cid)))
    assert values == sorted(v for _, v in rows)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", "binary"),
        (b"sequence,score\nACDEFG,\xff\xfe0.5\n", "not UTF-8 or UTF-16"),
    ],
)
def test_a_file_with_no_readable_table_is_a_422_at_preview(
    client, session_factory, data: bytes, words: str
) -> None:
    cid = wetlab(client)
    r = preview(client, cid, data)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]
    assert _uploads(session_factory, cid) == 0  # its bytes are not kept


def test_an_unknown_separator_is_named_in_the_error(client) -> None:
    cid = wetlab(client)
    r = client.post(
        f"/campaigns/{cid}/measurements",
        files={"file": ("f.csv", b"sequence|score\nACDEFG|0.5\n", "text/csv")},
    )
    assert r.status_code == 422
    assert "commas, semicolons or tabs" in r.json()["detail"]


def test_previews_never_committed_are_deleted_after_the_documented_time(
    client, session_factory, settings
) -> None:
    cid = wetlab(client)
    old = preview(client, cid, csv_bytes("sequence,score", seed_rows(5, seed=1))).json()["id"]
    kept = preview(client, cid, csv_bytes("sequence,score", seed_rows(5, seed=2))).json()["id"]
    with session_scope(session_factory) as s:
        s.execute(
            update(Upload)
            .where(Upload.id == old)
            .values(created_at=utcnow() - timedelta(hours=settings.preview_ttl_h + 1))
        )
    preview(client, cid, csv_bytes("sequence,score", seed_rows(5, seed=3)))
    assert client.get(f"/campaigns/{cid}/uploads/{old}").status_code == 404
    assert client.get(f"/campaigns/{cid}/uploads/{kept}").status_code == 200
