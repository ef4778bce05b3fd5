"""``llome bench llome``'s switches reach the loop's config; the results table's helpers."""

from __future__ import annotations

import csv

import pytest

from benchmarks.runs import (
    CSV_COLUMNS,
    append_rows,
    llome_parser,
    loop_config,
    method_name,
    read_csv,
    seeds_label,
)
from llome_core.config import parse_schedule
from llome_core.training import resolve


def config_of(*flags: str):  # type: ignore[no-untyped-def]
    return loop_config(llome_parser().parse_args(list(flags)), "sft1-marge9", seed=3)


def test_the_defaults_are_the_papers() -> None:
    args = llome_parser().parse_args([])
    assert args.ga_seed == 50494 and args.preset == "ehr_v-32_l-032_m-4_c-4_q-4"
    config = config_of()
    assert config.generate.decoding == "constrained"
    assert config.train.checkpoint_fallback == "final"
    assert config.train.replay_fraction == 0.0  # no replay, as the paper
    assert (config.batch_size, config.generate.num_seeds, config.generate.samples_per_step) == (
        2000,
        200,
        10,
    )


def test_decoding_and_checkpoint_fallback_flags_set_the_config_fields() -> None:
    config = config_of("--decoding", "free", "--checkpoint-fallback", "start")
    assert config.generate.decoding == "free"
    assert config.train.checkpoint_fallback == "start"
    with pytest.raises(SystemExit):
        llome_parser().parse_args(["--decoding", "greedy"])


def test_same_learning_rate_is_the_rate_of_every_objective_of_the_schedule() -> None:
    config = config_of("--same-learning-rate", "1e-4")
    rates = {
        obj: resolve(config.train, obj, is_tiny_model=True).learning_rate
        for obj in parse_schedule(config.objective, config.rounds)
    }
    assert rates == {"sft": 1e-4, "marge": 1e-4}
    own = config_of()
    assert (
        len({resolve(own.train, obj, is_tiny_model=True).learning_rate for obj in ("sft", "marge")})
        == 2
    )  # without it, each objective has its own


def test_a_small_budget_gets_a_small_refinement_unless_told() -> None:
    small = config_of("--budget", "8")
    assert (small.generate.num_seeds, small.generate.samples_per_step) == (8, 1)
    told = config_of("--budget", "8", "--num-seeds", "5", "--samples", "2")
    assert (told.generate.num_seeds, told.generate.samples_per_step) == (5, 2)


def test_method_names_say_the_switches() -> None:
    assert method_name("marge") == "marge"
    assert method_name("marge", "free", 1e-4) == "marge-free-lr1e-4"
    assert method_name("sft", same_lr=2.5e-3) == "sft-lr2.5e-3"


def test_the_regret_legend_says_where_a_running_seed_stops() -> None:
    assert seeds_label({10_000: 3, 12_000: 3}) == "3 seeds"
    assert seeds_label({10_000: 1}) == "1 seed"
    assert seeds_label({10_000: 3, 22_000: 3, 24_000: 2}) == "3 seeds to 22,000 calls, 2 after"


def test_append_rows_writes_the_header_once_and_refuses_another_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "results.csv"
    append_rows([{"instance": "x", "method": "ga", "seed": 0, "round": 0, "oracle_calls": 0}], path)
    append_rows(
        [
            {
                "instance": "x",
                "method": "ga",
                "seed": 0,
                "round": 1,
                "oracle_calls": 10,
                "min_regret": 0.5,
                "cpu_seconds": 1.25,
            }
        ],
        path,
    )
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) and len(lines) == 3
    rows = read_csv(path)
    assert [(r["round"], r["oracle_calls"], r["min_regret"]) for r in rows] == [
        (0, 0, None),
        (1, 10, 0.5),
    ]
    other = tmp_path / "other.csv"
    with other.open("w", newline="") as fh:
        csv.writer(fh).writerow(["method", "seed"])
    with pytest.raises(ValueError, match="columns"):
        append_rows([{"method": "ga"}], other)


def test_a_bench_run_with_every_switch_names_them_in_its_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from benchmarks.runs import llome_main

    argv = [
        "--preset",
        "ehr_v-8_l-008_m-2_c-2_q-2",
        "--ehrlich-seed",
        "3",
        "--objective",
        "sft",
        "--rounds",
        "1",
        "--budget",
        "8",
        "--seeds",
        "1",
        "--ga-particles",
        "40",
        "--ga-steps",
        "2",
        "--ga-mutation-prob",
        "0.05",
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--first-round-epochs",
        "1",
        "--refine-steps",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--decoding",
        "free",
        "--same-learning-rate",
        "1e-3",
        "--checkpoint-fallback",
        "start",
        "--out",
        str(tmp_path),
    ]
    assert llome_main(argv) == 0
    rows = read_csv(tmp_path / "results.csv")
    llome = [r for r in rows if r["method"] != "ga"]
    assert {r["method"] for r in llome} == {"sft-free-lr1e-3"}
    assert (llome[0]["round"], llome[0]["oracle_calls"]) == (0, 80)  # 2 steps x 40
    last = llome[-1]
    assert last["decoding"] == "free" and last["learning_rate"] == 1e-3
    assert last["objective"] == "sft" and 0.0 <= last["parse_fail_frac"] <= 1.0
    ga = [r for r in rows if r["method"] == "ga"]
    assert ga[-1]["oracle_calls"] == last["oracle_calls"] - last["oracle_calls"] % 40
