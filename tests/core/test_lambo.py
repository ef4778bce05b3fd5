"""``llome bench lambo``: the results file it appends to, the worker's pieces of the authors' driver,
and (slow) one real LaMBO-2 round in the LaMBO venv on a tiny Ehrlich instance."""

from __future__ import annotations

import csv
import subprocess

import numpy as np
import pytest

from benchmarks import lambo
from benchmarks.lambo_worker import farthest_first, geometric_partitioning


def test_locked_append_writes_the_contract_header_once_and_appends_whole_rows(tmp_path):
    path = tmp_path / "results.csv"
    lambo.append_locked(
        [
            {
                "instance": "i",
                "method": "lambo2",
                "seed": 0,
                "round": 0,
                "oracle_calls": 10,
                "min_regret": 0.5,
            }
        ],
        path,
    )
    lambo.append_locked(
        [
            {
                "instance": "i",
                "method": "lambo2",
                "seed": 0,
                "round": 1,
                "oracle_calls": 12,
                "min_regret": 0.25,
                "extra": "ignored",
            }
        ],
        path,
    )
    with path.open() as fh:
        lines = list(csv.reader(fh))
    assert tuple(lines[0]) == lambo.CSV_COLUMNS
    assert len(lines) == 3
    rows = lambo.read_rows(path)
    assert [r["oracle_calls"] for r in rows] == [10, 12]
    assert rows[1]["mean_regret"] is None
    assert lambo.rounds_written(rows, "i", "lambo2", 0) == {0, 1}
    assert lambo.rounds_written(rows, "i", "lambo2", 1) == set()


def test_farthest_first_starts_from_the_best_and_then_takes_the_farthest():
    states = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    scores = np.array([0.1, 0.9, 0.2, -np.inf])
    # best is row 1; farthest from it is row 2 (3 differences); then row 0 and row 3 are both
    # at distance 1 from the chosen set, and the higher score (row 0) wins the tie
    assert farthest_first(states, scores, 3) == [1, 2, 0]
    assert farthest_first(states, scores, 10) == [1, 2, 0, 3]


def test_recency_partition_is_the_authors_geometric_one():
    t = np.array([0, 1, 2, 3, 4, 4])
    # newest round -> 0, the two before -> 1, the rest -> 2 (poli-baselines' rule)
    assert geometric_partitioning(t).tolist() == [2, 2, 1, 1, 0, 0]


def test_alphabets_are_the_ones_the_authors_give_the_tokenizer():
    assert lambo.alphabet(8) == list("ARNDCEQG")
    assert lambo.alphabet(32)[-6:] == list("123456")
    with pytest.raises(ValueError, match="num_states"):
        lambo.alphabet(40)


@pytest.mark.slow
def test_one_lambo2_round_on_a_tiny_instance_appends_its_rows_and_a_rerun_skips(tmp_path):
    try:
        lambo.lambo_python()
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"the LaMBO venv could not be built here: {exc}")
    out = tmp_path / "results.csv"
    argv = [
        "--preset",
        "ehr_v-8_l-016_m-2_c-4_q-4",
        "--seeds",
        "0",
        "--rounds",
        "1",
        "--budget",
        "24",
        "--ga-particles",
        "100",
        "--ga-steps",
        "2",
        "--out",
        str(out),
        "--worker-log",
        str(tmp_path / "worker.log"),
        "--threads",
        "2",
        "--set",
        "ensemble_size=1",
        "--set",
        "max_epochs=1",
        "--set",
        "num_steps=2",
    ]
    assert lambo.main(argv) == 0
    rows = lambo.read_rows(out)
    assert [r["round"] for r in rows] == [0, 1]
    assert {r["instance"] for r in rows} == {"ehr_v-8_l-016_m-2_c-4_q-4"}
    assert {r["method"] for r in rows} == {"lambo2-custom"}
    assert [r["oracle_calls"] for r in rows] == [200, 224]  # seed data 2 x 100, then the batch
    last = rows[1]
    assert 0.0 <= last["min_regret"] <= rows[0]["min_regret"]
    assert 0.0 < last["mean_edit_distance"] <= 1.0
    assert last["seconds"] > 0 and last["cpu_seconds"] > 0
    assert lambo.main(argv) == 0  # finished: skipped, nothing appended
    assert len(lambo.read_rows(out)) == 2
