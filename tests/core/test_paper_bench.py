"""``llome bench paper``: runs append their rows once, resume where they stopped, count calls as
the spec does (seed data = GA steps x particles), and never run twice at once."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from benchmarks import paper, runs
from benchmarks.runs import read_csv

TINY = "ehr_v-08_l-008_m-2_c-2_q-2"
# Hard enough that 16 proposals do not find the optimum (a run stops early when they do).
SMALL = "ehr_v-32_l-016_m-2_c-4_q-4"


def _rows(results: Path, method: str) -> list[dict]:
    return [r for r in read_csv(results) if r["method"] == method]


def test_the_ga_baseline_counts_steps_times_particles_and_is_written_once(tmp_path: Path) -> None:
    results = tmp_path / "results.csv"
    argv = [
        "--methods",
        "ga",
        "--seeds",
        "0",
        "--preset",
        TINY,
        "--rounds",
        "2",
        "--budget",
        "1000",
        "--results",
        str(results),
        "--workdir",
        str(tmp_path / "w"),
    ]
    assert paper.main(argv) == 0
    rows = _rows(results, "ga")
    # 10 steps of seed data + 2 rounds of 1000 = 12 GA steps of 1000 particles.
    assert [r["oracle_calls"] for r in rows] == [1000 * s for s in range(1, 13)]
    assert all(r["instance"] == TINY and r["seed"] == 0 for r in rows)
    regrets = [r["min_regret"] for r in rows]
    assert regrets == sorted(regrets, reverse=True)  # the best so far never gets worse
    assert (tmp_path / "regret.png").stat().st_size > 0

    assert paper.main(argv) == 0  # finished: nothing is run or appended again
    assert len(_rows(results, "ga")) == 12


def test_rows_a_crash_left_unwritten_are_appended_from_the_state(tmp_path: Path) -> None:
    results = tmp_path / "results.csv"
    argv = [
        "--methods",
        "ga",
        "--seeds",
        "1",
        "--preset",
        TINY,
        "--rounds",
        "1",
        "--budget",
        "1000",
        "--results",
        str(results),
        "--workdir",
        str(tmp_path / "w"),
    ]
    paper.main(argv)
    full = _rows(results, "ga")
    # As if the process died after saving its state but before appending: keep the header only.
    lines = results.read_text().splitlines(keepends=True)
    results.write_text(lines[0])
    paper.main(argv)
    assert _rows(results, "ga") == full


def test_a_run_held_by_another_process_is_skipped(tmp_path: Path, capsys) -> None:
    run = paper.Run(
        paper.METHODS["ga"],
        0,
        instance=TINY,
        workdir=tmp_path / "w",
        results=tmp_path / "results.csv",
        rounds=1,
        budget=1000,
    )
    with runs.locked(run.dir.with_suffix(".lock")):
        paper.main(
            [
                "--methods",
                "ga",
                "--seeds",
                "0",
                "--preset",
                TINY,
                "--rounds",
                "1",
                "--budget",
                "1000",
                "--results",
                str(tmp_path / "results.csv"),
                "--workdir",
                str(tmp_path / "w"),
            ]
        )
    assert "running in another process" in capsys.readouterr().out
    assert not (tmp_path / "results.csv").exists() or not _rows(tmp_path / "results.csv", "ga")


def test_the_default_plan_runs_every_method_once_before_any_second_seed() -> None:
    plan = paper.planned_runs(list(paper.DEFAULT_ORDER), None)
    listed = [m for m in paper.DEFAULT_ORDER if not paper.METHODS[m].extra]
    first = plan[: len(listed)]
    assert [m for m, _ in first] == listed
    assert all(s == 0 for _, s in first)
    assert sorted(s for m, s in plan if m == "marge") == [0, 1, 2]
    # The extra schedule waits until the methods have all their seeds.
    assert plan[-1] == ("sft5-marge5", 0)


@pytest.mark.slow
def test_an_interrupted_llome_run_resumes_from_its_last_round(tmp_path: Path) -> None:
    results = tmp_path / "results.csv"
    argv = [
        "--methods",
        "sft",
        "--seeds",
        "0",
        "--preset",
        SMALL,
        "--rounds",
        "2",
        "--budget",
        "16",
        "--results",
        str(results),
        "--workdir",
        str(tmp_path / "w"),
        "--quiet",
    ]
    run = paper.Run(
        paper.METHODS["sft"],
        0,
        instance=SMALL,
        workdir=tmp_path / "w",
        results=results,
        rounds=2,
        budget=16,
    )
    paper.main([*argv, "--time-limit", "0"])  # stops after its first round
    state = paper.read_state(run.state_path)
    assert [r["round"] for r in _rows(results, "sft")] == [0, 1]
    assert not state["done"] and state["loop"]["round"] == 1

    paper.main(argv)  # goes on from round 1, appends round 2 only
    rows = _rows(results, "sft")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[0]["oracle_calls"] == 10_000  # GA seed data: 10 steps x 1000 particles
    assert all(0 < b["oracle_calls"] - a["oracle_calls"] <= 16 for a, b in itertools.pairwise(rows))
    assert paper.read_state(run.state_path)["done"]
    # The run folder keeps the state and the one checkpoint it names, nothing older.
    assert sorted(p.name for p in run.dir.iterdir()) == ["round-02", "state.json.gz"]
    assert sorted(p.name for p in (run.dir / "round-02").iterdir()) == ["checkpoint"]


def test_the_summary_reports_each_method_at_the_budgets_it_reached(tmp_path: Path) -> None:
    results = tmp_path / "results.csv"
    paper.main(
        [
            "--methods",
            "ga",
            "--seeds",
            "0,1",
            "--preset",
            TINY,
            "--rounds",
            "10",
            "--budget",
            "2000",
            "--results",
            str(results),
            "--workdir",
            str(tmp_path / "w"),
        ]
    )
    table = paper.summary(results, TINY)
    ga_line = next(line for line in table.splitlines() if line.startswith("| ga |"))
    cells = [c.strip() for c in ga_line.strip("|").split("|")]
    assert cells[1] == "2 (2)"  # two seeds, both at 30,000 calls
    at_30k = [r["min_regret"] for r in read_csv(results) if r["oracle_calls"] == 30_000]
    assert cells[4].startswith(f"{sum(at_30k) / 2:.3f}")


def test_a_run_folder_of_plain_json_resumes_and_is_rewritten_gzipped(tmp_path: Path) -> None:
    run = paper.Run(
        paper.METHODS["sft"],
        0,
        instance=SMALL,
        workdir=tmp_path,
        results=tmp_path / "results.csv",
        rounds=2,
        budget=16,
    )
    run.dir.mkdir(parents=True)
    old = {"rows": [], "done": False, "loop": {"checkpoint": "/elsewhere/round-01/checkpoint"}}
    run.legacy_state_path.write_text(json.dumps(old))
    state = run.load()
    assert state is not None and state["loop"]["checkpoint"] == str(
        run.dir / "round-01" / "checkpoint"
    )
    run.save(state)
    assert not run.legacy_state_path.exists()
    assert paper.read_state(run.state_path) == state
    before = run.state_path.read_bytes()
    run.save(state)  # the same state, the same bytes
    assert run.state_path.read_bytes() == before
