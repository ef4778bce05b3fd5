"""``llome bench``: benchmark runs that write ``results.csv`` and a regret plot.

Every method writes the same CSV columns (:data:`CSV_COLUMNS`, one row per round and seed, empty
cells where a metric does not apply), and :func:`plot_regret` draws any such table: min-regret
against oracle calls, one line per method (mean over seeds) with a min-max band.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llome_core.config import GAConfig

CSV_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "round",
    "oracle_calls",
    "min_regret",
    "mean_regret",
    "feasible_frac",
    "unique_frac",
    "mean_edit_distance",
    "parse_fail_frac",
    "seconds",
)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``"0-4"`` -> ``[0, 1, 2, 3, 4]``."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"seeds must look like '0,1,2' or '0-4', got {text!r}"
            ) from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def _records(rows: Any) -> list[dict[str, Any]]:
    if hasattr(rows, "to_dict"):  # a pandas DataFrame
        return list(rows.to_dict("records"))
    return [dict(r) for r in rows]


def write_csv(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows with :data:`CSV_COLUMNS` (missing or None cells left empty, floats at 6 digits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            out = {}
            for key in CSV_COLUMNS:
                value = row.get(key)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    out[key] = ""
                elif isinstance(value, float):
                    out[key] = f"{value:.6g}"
                else:
                    out[key] = value
            writer.writerow(out)
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results CSV with numbers parsed (empty cells become None)."""
    rows = []
    with Path(path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, Any] = {}
            for key, value in row.items():
                if value == "" or value is None:
                    parsed[key] = None
                elif key == "method":
                    parsed[key] = value
                else:
                    number = float(value)
                    parsed[key] = (
                        int(number) if key in ("seed", "round", "oracle_calls") else number
                    )
            rows.append(parsed)
    return rows


def plot_regret(rows: Any, path: str | Path, title: str) -> Path:
    """PNG of min-regret vs oracle calls per method: mean over seeds, shaded min-max band.

    ``rows``: dicts or a DataFrame with at least ``method``, ``seed``, ``oracle_calls`` and
    ``min_regret``; seeds may report at different oracle-call counts (each point averages the
    seeds that reported it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in _records(rows):
        if row.get("min_regret") is None or row.get("oracle_calls") is None:
            continue
        by_method[str(row["method"])][float(row["oracle_calls"])].append(float(row["min_regret"]))

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method, points in sorted(by_method.items()):
        xs = sorted(points)
        mean = [sum(points[x]) / len(points[x]) for x in xs]
        low = [min(points[x]) for x in xs]
        high = [max(points[x]) for x in xs]
        seeds = max(len(points[x]) for x in xs)
        (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=f"{method} ({seeds} seeds)")
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("min regret (1 - best f)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.text(
        0.99,
        0.02,
        "line: mean over seeds; band: min-max",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        alpha=0.7,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- llome bench ga


def ga_main(argv: list[str] | None = None) -> int:
    """``llome bench ga``: the GA on the paper's Ehrlich instance with the paper's GA settings."""
    from tqdm import tqdm

    from llome_core.ehrlich import Ehrlich, preset_config
    from llome_core.ga import run_ga

    defaults = GAConfig()
    parser = argparse.ArgumentParser(
        prog="llome bench ga",
        description="Genetic algorithm baseline (holo DiscreteEvolution) on an Ehrlich function; "
        "writes OUT/results.csv and OUT/regret.png.",
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=[0, 1, 2],
        help="GA generator seeds, e.g. 0,1,2 (default)",
    )
    parser.add_argument(
        "--budget", type=int, default=30_000, help="oracle calls per seed (default 30000)"
    )
    parser.add_argument(
        "--out", default="bench-out/ga", help="output folder (default bench-out/ga)"
    )
    parser.add_argument(
        "--preset",
        default="ehr_v-32_l-032_m-4_c-4_q-4",
        help="Ehrlich preset (default: the paper's)",
    )
    parser.add_argument(
        "--ehrlich-seed", type=int, default=None, help="instance seed (default: the paper's 50494)"
    )
    parser.add_argument("--num-particles", type=int, default=defaults.num_particles)
    parser.add_argument("--mutation-prob", type=float, default=defaults.mutation_prob)
    parser.add_argument("--recombine-prob", type=float, default=defaults.recombine_prob)
    parser.add_argument("--survival-quantile", type=float, default=defaults.survival_quantile)
    args = parser.parse_args(argv)

    ehrlich_config = (
        preset_config(args.preset)
        if args.ehrlich_seed is None
        else preset_config(args.preset, args.ehrlich_seed)
    )
    f = Ehrlich.from_config(ehrlich_config)
    if args.budget < args.num_particles:
        parser.error(
            f"--budget {args.budget} is below one population of {args.num_particles} particles"
        )
    rounds = args.budget // args.num_particles
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    print(
        f"GA on {args.preset} (seed {f.random_seed}): {args.num_particles} particles, mutation "
        f"{args.mutation_prob}, recombination {args.recombine_prob}, survival quantile "
        f"{args.survival_quantile}; {rounds} populations = {rounds * args.num_particles} oracle calls per seed"
    )
    with tqdm(total=len(args.seeds) * rounds, desc="ga", unit="round") as bar:
        for seed in args.seeds:
            config = GAConfig(
                num_particles=args.num_particles,
                mutation_prob=args.mutation_prob,
                recombine_prob=args.recombine_prob,
                survival_quantile=args.survival_quantile,
                seed=seed,
            )
            bar.set_postfix(seed=seed)
            result = run_ga(f, config, budget=args.budget, reporter=lambda *_: bar.update(1))
            for h in result.history:
                rows.append({"method": "ga", "seed": seed, "parse_fail_frac": None, **h})
            tqdm.write(
                f"seed {seed}: best f {result.best_value:.4f} (regret {1 - result.best_value:.4f}), "
                f"{len(result.dataset)} distinct sequences ({int(result.dataset.feasible.sum())} feasible)"
            )
    csv_path = write_csv(rows, out / "results.csv")
    png_path = plot_regret(
        rows,
        out / "regret.png",
        f"GA on {args.preset}, N={args.num_particles}, {len(args.seeds)} seeds",
    )
    final = [r["min_regret"] for r in rows if r["round"] == rounds - 1]
    print(f"final min regret over seeds: mean {sum(final) / len(final):.4f}, best {min(final):.4f}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(ga_main())


# ---------------------------------------------------------------------- llome bench llome


def llome_main(argv: list[str] | None = None) -> int:
    """``llome bench llome``: the whole bilevel loop on an Ehrlich function, next to the GA."""
    import time

    import torch
    from tqdm import tqdm

    from llome_core.config import (
        EhrlichConfig,
        GenerateConfig,
        LoopConfig,
        ModelConfig,
        TrainConfig,
    )
    from llome_core.ehrlich import Ehrlich
    from llome_core.ga import run_ga
    from llome_core.loop import LlomeLoop
    from llome_core.optimizer import Labelled

    e, g, t = EhrlichConfig(), GenerateConfig(), TrainConfig()
    parser = argparse.ArgumentParser(
        prog="llome bench llome",
        description="LLOME on an Ehrlich function, seeded from the GA, next to the GA at the same "
        "oracle budget; writes OUT/results.csv and OUT/regret.png. Defaults are the paper's.",
    )
    parser.add_argument("--objective", default="marge",
                        help="sft|dpo|marge|reinforce|sft1-marge9, or several separated by commas")
    parser.add_argument("--num-states", type=int, default=e.num_states)
    parser.add_argument("--dim", type=int, default=e.dim)
    parser.add_argument("--num-motifs", type=int, default=e.num_motifs)
    parser.add_argument("--motif-length", type=int, default=e.motif_length)
    parser.add_argument("--quantization", type=int, default=e.quantization)
    parser.add_argument("--ehrlich-seed", type=int, default=e.random_seed, help="instance seed")
    parser.add_argument("--rounds", type=int, default=10, help="outer rounds")
    parser.add_argument("--budget", type=int, default=2000,
                        help="oracle calls per outer round (the spec's N)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2])
    parser.add_argument("--out", default="bench-out/llome")
    parser.add_argument("--model", default=None, help="a local Hugging Face causal-LM directory "
                        "(default: a tiny GPT-NeoX built locally)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ga-particles", type=int, default=GAConfig().num_particles)
    parser.add_argument("--ga-steps", type=int, default=GAConfig().num_steps,
                        help="GA steps that make the seed data")
    parser.add_argument("--num-seeds", type=int, default=g.num_seeds, help="refinement seeds")
    parser.add_argument("--refine-steps", type=int, default=g.num_steps)
    parser.add_argument("--samples", type=int, default=g.samples_per_step)
    parser.add_argument("--format", choices=("json", "compact"), default="json")
    parser.add_argument("--hidden-size", type=int, default=ModelConfig().hidden_size)
    parser.add_argument("--num-layers", type=int, default=ModelConfig().num_layers)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: per objective, for the model kind (llome_core.training)")
    parser.add_argument("--first-round-epochs", type=int, default=None)
    parser.add_argument("--replay-fraction", type=float, default=t.replay_fraction)
    parser.add_argument("--max-examples", type=int, default=t.max_examples,
                        help="at most this many training pairs/triples per round (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    f = Ehrlich(args.num_states, args.dim, args.num_motifs, args.motif_length,
                args.quantization, random_seed=args.ehrlich_seed)
    objectives = [o.strip() for o in args.objective.split(",") if o.strip()]
    seed_calls = args.ga_particles * (args.ga_steps + 1)
    total_calls = seed_calls + args.rounds * args.budget
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    print(f"LLOME {objectives} on {f!r}: GA seed data {seed_calls} calls, then {args.rounds} "
          f"rounds of {args.budget}; GA baseline at {total_calls} calls; device {args.device}")

    def label(x: torch.Tensor) -> Labelled:
        values, feasible = f.evaluate(x)
        return Labelled(x, values, feasible)

    bar = tqdm(total=len(args.seeds) * len(objectives) * args.rounds, desc="llome", unit="round")
    for seed in args.seeds:
        ga_config = GAConfig(num_particles=args.ga_particles, num_steps=args.ga_steps, seed=seed)
        started = time.perf_counter()
        baseline = run_ga(f, ga_config, budget=total_calls)
        for h in baseline.history:
            rows.append({"method": "ga", "seed": seed, "parse_fail_frac": None, **h})
        seed_data = run_ga(f, ga_config).dataset
        seed_best = float(seed_data.values.max())
        tqdm.write(f"seed {seed}: GA seed data {len(seed_data)} sequences, best f {seed_best:.4f}; "
                   f"GA alone reaches {baseline.best_value:.4f} at {total_calls} calls "
                   f"({time.perf_counter() - started:.1f} s)")
        for objective in objectives:
            config = LoopConfig(
                objective=objective, rounds=args.rounds, batch_size=args.budget, seed=seed,
                device=args.device,
                model=ModelConfig(path=args.model, hidden_size=args.hidden_size,
                                  num_layers=args.num_layers, text_format=args.format),
                train=TrainConfig(learning_rate=args.learning_rate,
                                  first_round_epochs=args.first_round_epochs,
                                  replay_fraction=args.replay_fraction,
                                  max_examples=args.max_examples),
                generate=GenerateConfig(num_seeds=args.num_seeds, num_steps=args.refine_steps,
                                        samples_per_step=args.samples),
            )
            loop = LlomeLoop(config, num_states=args.num_states, dim=args.dim,
                             workdir=out / "runs" / f"{objective}-seed{seed}",
                             feasible=f.is_feasible)
            loop.observe(seed_data)
            best, calls, started = seed_best, seed_calls, time.perf_counter()
            rows.append({"method": objective, "seed": seed, "round": 0, "oracle_calls": calls,
                         "min_regret": 1 - best, "seconds": 0.0})
            while not loop.done:
                bar.set_postfix(seed=seed, objective=objective, round=loop.round + 1)
                proposal = loop.propose(lambda phase, step, total: bar.set_postfix(
                    seed=seed, objective=objective, round=loop.round + 1, phase=phase,
                    step=f"{step}/{total}"))
                batch = label(proposal.sequences)
                loop.observe(batch)
                calls += len(batch)
                best = max(best, float(batch.values.max()) if len(batch) else 0.0)
                m = proposal.metrics
                rows.append({
                    "method": objective, "seed": seed, "round": loop.round,
                    "oracle_calls": calls, "min_regret": 1 - best,
                    "mean_regret": float(1 - batch.values.mean()) if len(batch) else None,
                    "feasible_frac": float(batch.feasible.float().mean()) if len(batch) else None,
                    "unique_frac": m.get("unique_frac"),
                    "mean_edit_distance": m.get("mean_edit_distance"),
                    "parse_fail_frac": m.get("parse_fail_frac"),
                    "seconds": time.perf_counter() - started,
                })
                bar.update(1)
                if best >= 1.0:  # the optimum: nothing left to find
                    bar.update(args.rounds - loop.round)
                    break
            tqdm.write(f"seed {seed} {objective}: min regret {1 - best:.4f} after {calls} calls "
                       f"({time.perf_counter() - started:.0f} s)")
    bar.close()
    csv_path = write_csv(rows, out / "results.csv")
    png_path = plot_regret(rows, out / "regret.png",
                           f"Ehrlich v={args.num_states} L={args.dim} c={args.num_motifs} "
                           f"k={args.motif_length}: LLOME vs GA, {len(args.seeds)} seeds")
    print(f"wrote {csv_path} and {png_path}")
    return 0
