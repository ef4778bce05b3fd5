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
