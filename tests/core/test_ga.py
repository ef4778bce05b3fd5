"""The genetic algorithm: parity with holo's DiscreteEvolution (golden fixtures), run_ga, ask/tell."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from functools import cache, lru_cache
from pathlib import Path

import pytest
import torch

from llome_core.config import GAConfig
from llome_core.ehrlich import Ehrlich
from llome_core.ga import (
    GeneticOptimizer,
    campaign_config,
    ga_step,
    losses_from_values,
    run_ga,
)
from llome_core.optimizer import Labelled

DATA = Path(__file__).resolve().parents[1] / "data" / "holo_ga.json"
SMALL = {
    "num_states": 8,
    "dim": 16,
    "num_motifs": 2,
    "motif_length": 3,
    "quantization": 3,
    "random_seed": 101,
}


@lru_cache(maxsize=1)
def runs() -> list[dict]:
    return json.loads(DATA.read_text())["runs"]


@cache
def small_ehrlich() -> Ehrlich:
    return Ehrlich(**SMALL)


def _holo_losses(values: list) -> torch.Tensor:
    return torch.tensor([float("inf") if v is None else v for v in values], dtype=torch.float32)


@pytest.mark.parametrize("index", range(len(runs())))
def test_ga_step_matches_holo_discrete_evolution(index: int):
    run = runs()[index]
    f = Ehrlich(**run["ehrlich"])
    ga = run["ga"]
    assert f.initial_solution(1)[0].tolist() == run["start"]
    generator = torch.Generator().manual_seed(ga["seed"])
    particles = torch.tensor(run["start"]).repeat(ga["num_particles"], 1)
    for step in run["trajectory"]:
        values, feasible = f.evaluate(particles)
        losses = losses_from_values(values, feasible)
        assert torch.equal(losses, _holo_losses(step["losses"]))
        assert particles[int(torch.argmin(losses))].tolist() == step["best"]
        particles = ga_step(
            particles,
            losses,
            generator,
            f.num_states,
            ga["mutation_prob"],
            ga["recombine_prob"],
            ga["survival_quantile"],
        )
        assert particles.tolist() == step["particles"]


@pytest.mark.parametrize("index", range(len(runs())))
def test_run_ga_follows_the_holo_trajectory_and_keeps_every_distinct_particle(index: int):
    run = runs()[index]
    f = Ehrlich(**run["ehrlich"])
    config = GAConfig(num_steps=len(run["trajectory"]), **run["ga"])
    result = run_ga(f, config)
    assert result.particles.tolist() == run["trajectory"][-1]["particles"]
    seen: dict[tuple, None] = {}
    for step in run["trajectory"]:
        for row in step["particles"]:
            seen.setdefault(tuple(row), None)
    assert [tuple(r) for r in result.dataset.sequences.tolist()] == list(seen)
    values, feasible = f.evaluate(result.dataset.sequences)
    assert torch.equal(result.dataset.values, values.double()) and torch.equal(
        result.dataset.feasible, feasible
    )
    # The start population is given: only the populations of the steps cost oracle calls.
    assert [h["oracle_calls"] for h in result.history] == [
        config.num_particles * t for t in range(config.num_steps + 1)
    ]


def test_run_ga_history_reports_monotone_best_and_fractions():
    f = small_ehrlich()
    result = run_ga(
        f, GAConfig(num_particles=60, mutation_prob=0.1, survival_quantile=0.2, num_steps=8, seed=4)
    )
    best = [h["min_regret"] for h in result.history]
    assert all(b2 <= b1 for b1, b2 in itertools.pairwise(best))
    assert result.history[0]["unique_frac"] == pytest.approx(1 / 60)  # N copies of the start
    assert result.history[0]["mean_edit_distance"] == 0.0
    # normalized Hamming distance of each particle to itself before mutation: about the rate
    edits = [h["mean_edit_distance"] for h in result.history[1:]]
    assert all(0.0 < e < 0.25 for e in edits)
    assert sum(edits) / len(edits) == pytest.approx(0.1 * (1 - 1 / f.num_states), rel=0.35)
    for h in result.history:
        assert 0.0 <= h["feasible_frac"] <= 1.0 and 0.0 < h["unique_frac"] <= 1.0
    assert result.best_value == pytest.approx(1.0 - best[-1])
    assert float(f(result.best_sequence)[0]) == result.best_value
    assert len(result.dataset) == len({tuple(r) for r in result.dataset.sequences.tolist()})


def test_run_ga_budget_sets_the_number_of_populations():
    f = small_ehrlich()
    result = run_ga(f, GAConfig(num_particles=20, survival_quantile=0.2), budget=110)
    assert result.history[-1]["oracle_calls"] == 100 and len(result.history) == 6
    with pytest.raises(ValueError, match="budget"):
        run_ga(f, GAConfig(num_particles=20, survival_quantile=0.2), budget=10)


def test_run_ga_accepts_a_plain_objective_with_infinite_losses():
    f = small_ehrlich()

    def holo_style(x: torch.Tensor) -> torch.Tensor:  # -inf for infeasible, as holo returns
        values, feasible = f.evaluate(x)
        return torch.where(feasible, values, torch.full_like(values, -float("inf")))

    config = GAConfig(
        num_particles=30, mutation_prob=0.1, survival_quantile=0.2, num_steps=3, seed=1
    )
    a = run_ga(holo_style, config, start=f.initial_solution(1), num_states=8)
    b = run_ga(f, config)
    assert torch.equal(a.particles, b.particles) and torch.equal(a.dataset.values, b.dataset.values)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mutation_prob": 0.0}, "mutation_prob"),
        ({"mutation_prob": 1.0}, "mutation_prob"),
        ({"recombine_prob": 1.0}, "recombine_prob"),
        ({"survival_quantile": 0.0}, "survival_quantile"),
        ({"num_particles": 10, "survival_quantile": 0.1}, "at least 2"),
    ],
)
def test_bad_ga_settings_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        run_ga(small_ehrlich(), replace(GAConfig(), **changes))


# ---------------------------------------------------------------- ask/tell


def _label(f: Ehrlich, sequences: torch.Tensor) -> Labelled:
    values, feasible = f.evaluate(sequences)
    return Labelled(sequences, values, feasible)


def test_genetic_optimizer_proposes_what_run_ga_evaluates():
    f = small_ehrlich()
    config = GAConfig(
        num_particles=40,
        mutation_prob=0.1,
        recombine_prob=0.3,
        survival_quantile=0.2,
        num_steps=5,
        seed=9,
    )
    reference = run_ga(f, config)
    opt = GeneticOptimizer(config, f.num_states, f.dim, f.initial_solution(1))
    first = opt.ask()
    assert (
        first.sequences.tolist() == f.initial_solution(1).tolist()
    )  # N copies: one sequence to label
    opt.tell(_label(f, first.sequences))
    asked = 0
    while opt.step < config.num_steps:
        proposal = opt.ask()
        assert len(proposal.candidates) > 0
        assert not any(
            tuple(c.sequence) in {tuple(r) for r in opt.labelled().sequences.tolist()}
            for c in proposal.candidates
        )
        asked += len(proposal.candidates)
        opt.tell(_label(f, proposal.sequences))
    assert torch.equal(opt.particles, reference.particles)
    assert asked == len(opt.labelled()) - 1  # every label asked for exactly once
    assert opt.best()[1] == reference.best_value


def test_genetic_optimizer_resumes_bit_for_bit_from_json_state():
    f = small_ehrlich()
    config = GAConfig(num_particles=30, mutation_prob=0.1, survival_quantile=0.2, seed=2)
    start = f.initial_solution(4)  # (M, L) starts are tiled over the population
    straight = GeneticOptimizer(config, f.num_states, f.dim, start)
    interrupted = GeneticOptimizer(config, f.num_states, f.dim, start)
    for round_ in range(6):
        expected = straight.ask()
        if round_ in (2, 4):  # stop between ask and tell, and restart from JSON
            interrupted = GeneticOptimizer.from_state(json.loads(json.dumps(interrupted.state())))
        got = interrupted.ask()
        assert got.sequences.tolist() == expected.sequences.tolist()
        straight.tell(_label(f, expected.sequences))
        interrupted.tell(_label(f, got.sequences))
        interrupted = GeneticOptimizer.from_state(json.loads(json.dumps(interrupted.state())))
    assert torch.equal(straight.particles, interrupted.particles)
    assert straight.state() == interrupted.state()


def test_genetic_optimizer_rejects_bad_starts():
    with pytest.raises(ValueError, match="dim"):
        GeneticOptimizer(GAConfig(), 8, 16, torch.zeros(1, 15, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        GeneticOptimizer(GAConfig(), 8, 16, torch.full((1, 16), 8))


# ---------------------------------------------------------------- llome bench ga


def test_bench_ga_writes_results_csv_and_regret_plot(tmp_path):
    from benchmarks.runs import CSV_COLUMNS, ga_main, read_csv

    argv = [
        "--preset",
        "ehr_v-8_l-016_m-2_c-3_q-3",
        "--ehrlich-seed",
        "101",
        "--num-particles",
        "20",
        "--survival-quantile",
        "0.2",
        "--mutation-prob",
        "0.1",
        "--budget",
        "80",
        "--seeds",
        "0,2",
        "--out",
        str(tmp_path),
    ]
    assert ga_main(argv) == 0
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)
    rows = read_csv(tmp_path / "results.csv")
    assert [(r["seed"], r["round"], r["oracle_calls"]) for r in rows] == [
        (s, t, 20 * t)
        for s in (0, 2)
        for t in range(5)  # 80 calls: 4 steps of 20
    ]
    assert all(r["method"] == "ga" and r["parse_fail_frac"] is None for r in rows)
    assert {r["instance"] for r in rows} == {"ehr_v-8_l-016_m-2_c-3_q-3"}
    assert all(r["cpu_seconds"] is not None and 0 <= r["mean_edit_distance"] <= 1 for r in rows)
    result = run_ga(
        Ehrlich(**SMALL),
        GAConfig(num_particles=20, survival_quantile=0.2, mutation_prob=0.1, seed=2),
        budget=80,
    )
    assert [r["min_regret"] for r in rows if r["seed"] == 2] == pytest.approx(
        [h["min_regret"] for h in result.history]
    )
    assert (tmp_path / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the campaign GA (ask/tell)


def _seeded(f: Ehrlich, n: int = 40) -> GeneticOptimizer:
    data = run_ga(
        f, GAConfig(num_particles=20, mutation_prob=0.1, survival_quantile=0.2, num_steps=2, seed=1)
    ).dataset
    config = campaign_config(n, seed=7, mutation_prob=0.2, survival_quantile=0.2)
    return GeneticOptimizer.from_seed_data(config, f.num_states, f.dim, data)


def test_the_campaign_ga_starts_from_the_best_labelled_sequences_tiled():
    f = small_ehrlich()
    data = run_ga(
        f, GAConfig(num_particles=20, mutation_prob=0.1, survival_quantile=0.2, num_steps=2, seed=1)
    ).dataset
    opt = GeneticOptimizer.from_seed_data(campaign_config(40, seed=7), f.num_states, f.dim, data)
    order = torch.argsort(data.values + data.feasible.double(), descending=True, stable=True)
    best4 = data.sequences[order[:4]]  # N // 10 parents
    assert torch.equal(opt.particles, best4[torch.arange(40) % 4])
    assert len(opt.labelled()) == len(data)  # told every label
    assert {tuple(r) for r in data.sequences.tolist()} <= opt.known()


def test_ga_candidates_name_their_parent_the_particle_before_mutation():
    f = small_ehrlich()
    opt = _seeded(f)
    proposal = opt.ask()  # every start particle is labelled: the first ask takes a step
    assert opt.step == 1 and proposal.candidates
    pairs = [(c.sequence, c.parent) for c in proposal.candidates]
    assert all(p is not None and len(p) == f.dim for _, p in pairs)
    expected = sum(sum(a != b for a, b in zip(s, p)) / f.dim for s, p in pairs) / len(pairs)
    assert proposal.metrics["mean_edit_distance"] == pytest.approx(expected)


def test_a_dropped_or_composed_away_candidate_counts_as_failed_and_is_never_asked_again():
    f = small_ehrlich()
    opt = _seeded(f)
    proposal = opt.ask(min_hamming=2)
    info = proposal.metrics["composition"]
    assert info["min_hamming"] == 2
    assert proposal.metrics["dropped"] == (
        {"composition": info["too_close"]} if info["too_close"] else {}
    )
    rows = [c.sequence for c in proposal.candidates]
    for i, a in enumerate(rows):
        assert all(sum(x != y for x, y in zip(a, b)) >= 2 for b in rows[i + 1 :])
    withdrawn, measured = rows[0], rows[1:]
    opt.drop(torch.tensor([withdrawn]), "withdrawn")
    opt.tell(_label(f, torch.tensor(measured)))
    labels = {
        tuple(s): (v, ok)
        for s, v, ok in zip(
            opt.labelled().sequences.tolist(),
            opt.labelled().values.tolist(),
            opt.labelled().feasible.tolist(),
        )
    }
    assert labels[tuple(withdrawn)] == (0.0, False)  # failed: the GA does not wait for it
    # a label arriving after the drop does not replace it (the first label wins)
    opt.tell(_label(f, torch.tensor([withdrawn])))
    assert not opt.labelled().feasible[
        [tuple(s) for s in opt.labelled().sequences.tolist()].index(tuple(withdrawn))
    ]
    after = opt.ask()
    assert after.metrics["dropped"] == {"withdrawn": 1}  # counted once, in the next proposal
    assert not {c.sequence for c in after.candidates} & set(rows)
    resumed = GeneticOptimizer.from_state(json.loads(json.dumps(opt.state())))
    assert resumed.state() == opt.state()
    assert resumed.known() == opt.known()
