"""Small things a hostile or careless user found: plot titles are plain text, a NUL character is a
422 naming its field, seeds are bounded in the schema, the event log holds only real moves, and
a cancelled campaign still takes the results of a batch already in the lab."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from api.models import Campaign, Measurement
from api.services import metrics as metrics_service
from tests.service.test_campaigns import TINY_EHRLICH, ehrlich_campaign
from tests.service.test_candidates import filled, seeded_batch, template, upload_commit
from tests.service.test_uploads import csv_bytes, seed_rows

MATH = r"$\frac{a}{b}$ costs $5"


def test_a_campaign_name_with_dollar_signs_plots(client, session_factory) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign(name=MATH)).json()["id"]
    r = client.get(f"/campaigns/{cid}/plot.png")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    # The dashboard's second plot goes through the same renderer.
    with session_factory() as s:
        metrics = metrics_service.compute(s, s.get(Campaign, cid))
    assert metrics_service.fractions_png(metrics, MATH).startswith(b"\x89PNG")


def test_a_nul_character_is_a_422_naming_the_field(client) -> None:
    r = client.post("/campaigns", json=ehrlich_campaign(name="a\x00b"))
    assert r.status_code == 422
    assert "name" in r.json()["detail"] and "NUL" in r.json()["detail"]
    assert "2147483647" not in r.json()["detail"]
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    r = client.post(
        f"/campaigns/{cid}/sequences/1/corrections", json={"score": 0.5, "note": "x\x00"}
    )
    assert r.status_code == 422
    assert "note" in r.json()["detail"] and "NUL" in r.json()["detail"]


@pytest.mark.parametrize(
    ("oracle", "field"),
    [
        ({**TINY_EHRLICH, "seed": 2**70}, "oracle.seed"),
        ({**TINY_EHRLICH, "seed": -1}, "oracle.seed"),
        ({**TINY_EHRLICH, "seeding": {**TINY_EHRLICH["seeding"], "seed": 2**40}}, "seeding.seed"),
    ],
)
def test_seeds_are_bounded_in_the_schema(client, oracle, field: str) -> None:
    r = client.post("/campaigns", json=ehrlich_campaign(oracle=oracle))
    assert r.status_code == 422, r.text
    assert field.split(".")[-1] in r.json()["detail"]
    r = client.post("/campaigns", json=ehrlich_campaign(seed=2**31))
    assert r.status_code == 422 and "seed" in r.json()["detail"]


def test_resume_logs_only_the_move_that_happened(client) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    for _ in range(3):
        assert client.post(f"/campaigns/{cid}/pause").status_code == 200
        assert client.post(f"/campaigns/{cid}/resume").status_code == 200
    events = client.get(f"/campaigns/{cid}/events").json()["items"]
    moves = [(e["kind"], e["from_status"], e["to_status"]) for e in events]
    assert (
        moves
        == [("created", None, "created"), ("status", "created", "seeding")]
        + [("paused", "seeding", "paused"), ("resumed", "paused", "seeding")] * 3
    ), moves


def test_a_cancelled_campaign_takes_the_results_of_a_released_batch(
    client, runtime, publisher, session_factory
) -> None:
    cid, batch = seeded_batch(client, runtime, publisher)
    assert client.post(f"/campaigns/{cid}/batches/{batch['id']}/release").status_code == 200
    assert client.post(f"/campaigns/{cid}/cancel").status_code == 200
    header, rows = template(client, cid, batch["id"])
    for i, row in enumerate(rows):
        row["score"] = str(0.1 * (i % 7))
    upload_commit(client, cid, batch["id"], filled(header, rows))
    with session_factory() as s:
        labelled = s.scalar(
            select(func.count())
            .select_from(Measurement)
            .where(Measurement.campaign_id == cid, Measurement.batch_id == batch["id"])
        )
    assert labelled == len(rows)
    assert client.get(f"/campaigns/{cid}").json()["status"] == "cancelled"  # nothing runs again
    assert publisher.sent == []
    # New seed data is refused, in words.
    r = client.post(
        f"/campaigns/{cid}/measurements",
        files={"file": ("s.csv", csv_bytes("sequence,score", seed_rows(5, seed=9)), "text/csv")},
    )
    assert r.status_code == 409
    assert "cancelled" in r.json()["detail"] and "results of a batch" in r.json()["detail"]
