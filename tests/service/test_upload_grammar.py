"""Numbers in uploads follow one strict grammar (ASCII sign, digits, point, exponent) and a score
never silently disappears; what our templates write, the upload reads back."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import drain
from tests.service.test_candidates import filled, seeded_batch, template, upload_commit
from tests.service.test_uploads import csv_bytes, upload, wetlab


@pytest.mark.parametrize(
    "cell", ["1_0", "\uff15", "\u0663.\u0665", "nan", "inf", "1e999", "0x10", "--1"]
)
def test_a_score_outside_the_number_grammar_is_a_422_naming_row_and_column(
    client, cell: str
) -> None:
    cid = wetlab(client)
    r = upload(client, cid, f"sequence,score\nACDEFG,0.5\nCCCCCC,{cell}\n".encode())
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["row"] == 3 and r.json()["errors"][0]["column"] == "score"


@pytest.mark.parametrize("cell", ["1", "-2.5", "+.5", "3.", "1e-3", "2E+2"])
def test_scores_in_the_grammar_are_read(client, cell: str) -> None:
    cid = wetlab(client)
    assert upload(client, cid, f"sequence,score\nACDEFG,{cell}\n".encode()).status_code == 201


def test_a_score_with_feasible_false_is_an_error_naming_both_columns(client) -> None:
    cid = wetlab(client)
    r = upload(client, cid, b"sequence,score,feasible\nACDEFG,5.0,false\n")
    assert r.status_code == 422, r.text
    reason = r.json()["errors"][0]["reason"]
    assert r.json()["errors"][0]["row"] == 2 and "score" in reason and "feasible" in reason


@pytest.mark.parametrize(
    "line",
    [
        {"particle": [0, 1, 2, 3, 4, 5], "score": True},
        {"particle": [0, 1, 2.7, 3, 4, 5], "score": 0.5},
        {"particle": [0, 1, 2, 3, 4, 5], "score": "0.5"},
    ],
)
def test_jsonl_seed_data_is_not_coerced(client, line: dict) -> None:
    cid = wetlab(client)
    r = upload(client, cid, (json.dumps(line) + "\n").encode(), name="seed.jsonl")
    assert r.status_code == 422, r.text


def test_a_candidate_id_outside_the_grammar_is_a_422(client, runtime, publisher) -> None:
    cid, batch = seeded_batch(client, runtime, publisher)
    header, rows = template(client, cid, batch["id"])
    rows = rows[:1]
    rows[0]["candidate_id"] = "\u0661" + rows[0]["candidate_id"][1:]  # Arabic-Indic one
    rows[0]["score"] = "0.5"
    rows[0]["sequence"] = ""
    r = client.post(
        f"/campaigns/{cid}/batches/{batch['id']}/results",
        files={"file": ("r.csv", filled(header, rows), "text/csv")},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["column"] == "candidate_id", r.text


def test_the_template_round_trips_with_formula_letters_in_the_alphabet(
    client, runtime, publisher
) -> None:
    alphabet = "=+-@AC"
    rng = random.Random(3)
    seqs: dict[str, float] = {}
    while len(seqs) < 30:
        seqs["".join(rng.choice(alphabet) for _ in range(6))] = round(rng.random(), 3)
    cid = wetlab(
        client, oracle={"kind": "wetlab", "alphabet": alphabet, "length": 6, "reference": "======"}
    )
    # Seed cells that start with a formula letter are written as a spreadsheet would save them.
    rows = [("'" + s if s[0] in "=+-@" else s, v) for s, v in seqs.items()]
    assert upload(client, cid, csv_bytes("sequence,score", rows)).status_code == 201
    drain(runtime, publisher)
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    header, template_rows = template(client, cid, bid)
    assert any(r["mutant"].startswith("'") for r in template_rows)  # escaped on the way out
    for i, row in enumerate(template_rows):
        row["score"] = str(0.01 * i)
    done = upload_commit(client, cid, bid, filled(header, template_rows))  # 0 rejected
    assert done["status"] == "committed"
