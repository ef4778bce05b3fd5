"""Ehrlich benchmark runs: ``llome bench ga`` and ``llome bench llome``, and the results table
every Ehrlich benchmark writes (``llome bench paper`` and ``llome bench lambo`` too).

Every run writes the same CSV columns (:data:`CSV_COLUMNS`, one row per round and seed, empty
cells where a metric does not apply):

- ``instance``: the Ehrlich preset name of the shape (``ehr_v-32_l-032_m-4_c-4_q-4``);
  ``method``: ``ga``, ``lambo2`` or the LLOME objective or schedule, with ``-free`` for free
  decoding and ``-lr<rate>`` for one learning rate for every round (``marge-free-lr1e-4``);
- ``oracle_calls``: as the spec counts them: the GA's seed data cost steps x particles (the start
  population is given), then each round's batch;
- ``mean_edit_distance``: normalized Hamming distance from each candidate to the sequence it was
  made from (the GA's: its particle before mutation), mean over the batch;
- ``seconds`` / ``cpu_seconds``: the optimizer's cumulative wall and process CPU time since its
  start, oracle included, so cost per call is ``seconds / oracle_calls``.

Results files are appended to (:func:`append_rows`: the header only when the file is new), and
:func:`plot_regret` draws any such table: min regret against oracle calls, one line per method
(mean over seeds) with a min-max band.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from llome_core.config import GAConfig

CSV_COLUMNS: tuple[str, ...] = (
    "instance",
    "method",
    "objective",
    "decoding",
    "learning_rate",
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
    "cpu_seconds",
)
_TEXT_COLUMNS = ("instance", "method", "objective", "decoding")
_INT_COLUMNS = ("seed", "round", "oracle_calls")
PAPER_PRESET = "ehr_v-32_l-032_m-4_c-4_q-4"
GA_SEED = 50494  # the spec's GA seed for the seed data


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


def _cells(row: Mapping[str, Any], columns: tuple[str, ...] = CSV_COLUMNS) -> dict[str, Any]:
    out = {}
    for key in columns:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out[key] = ""
        elif isinstance(value, float):
            out[key] = f"{value:.6g}"
        else:
            out[key] = value
    return out


def write_csv(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write a new file of rows with :data:`CSV_COLUMNS` (missing or None cells left empty,
    floats at 6 significant digits)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_cells(row) for row in rows)
    return path


def append_rows(
    rows: Iterable[Mapping[str, Any]], path: str | Path, columns: tuple[str, ...] = CSV_COLUMNS
) -> Path:
    """Append rows to a results file (or a side table with its own ``columns``), writing the
    header only if the file is new; a file with another header is refused (its columns would no
    longer line up)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header) != columns:
            raise ValueError(
                f"{path} has columns {header}, not {list(columns)}: write to a new file"
            )
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(_cells(row, columns) for row in rows)
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
                elif key in _TEXT_COLUMNS:
                    parsed[key] = value
                else:
                    number = float(value)
                    parsed[key] = int(number) if key in _INT_COLUMNS else number
            rows.append(parsed)
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results file (``[]`` when there is none yet)."""
    return read_csv(path) if Path(path).exists() else []


def rounds_written(
    rows: Iterable[Mapping[str, Any]], instance: str, method: str, seed: int
) -> set[int]:
    """Round numbers the rows already hold for one (instance, method, seed)."""
    return {
        int(r["round"])
        for r in rows
        if r.get("instance") == instance and r.get("method") == method and r.get("seed") == seed
    }


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on ``path`` (created if missing), the lock under which the benches'
    processes append to a results file or claim a run; yields False at once when not blocking
    and another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_locked(
    rows: list[dict[str, Any]], path: str | Path, columns: tuple[str, ...] = CSV_COLUMNS
) -> None:
    """:func:`append_rows` under ``PATH.lock``, so that processes appending to the same file at
    the same time never interleave (nothing for no rows)."""
    if not rows:
        return
    path = Path(path)
    with locked(path.with_suffix(path.suffix + ".lock")):
        append_rows(rows, path, columns)


def method_name(objective: str, decoding: str = "constrained", same_lr: float | None = None) -> str:
    """``marge``, ``marge-free``, ``marge-lr1e-4``, ``marge-free-lr1e-4``."""
    name = objective
    if decoding == "free":
        name += "-free"
    if same_lr is not None:
        mantissa, exponent = f"{same_lr:e}".split("e")
        name += f"-lr{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return name


def seeds_label(seeds_at: dict[float, int]) -> str:
    """How many seeds a plotted mean covers, given the seed count at each oracle-call count.

    A seed still running reports fewer calls than the others, so the mean's tail covers fewer
    seeds; the label says from where, rather than claiming them all to the end.
    """
    most = max(seeds_at.values())
    last = max(seeds_at)
    if seeds_at[last] == most:
        return "1 seed" if most == 1 else f"{most} seeds"
    full_to = max(x for x, n in seeds_at.items() if n == most)
    return f"{most} seeds to {full_to:,.0f} calls, {seeds_at[last]} after"


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
        label = f"{method} ({seeds_label({x: len(points[x]) for x in xs})})"
        (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=label)
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

    from llome_core.ehrlich import Ehrlich, preset_config, preset_name
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
        "--budget",
        type=int,
        default=30_000,
        help="oracle calls per seed (default 30000: 30 steps of 1000)",
    )
    parser.add_argument(
        "--out", default="bench-out/ga", help="output folder (default bench-out/ga)"
    )
    parser.add_argument(
        "--preset", default=PAPER_PRESET, help="Ehrlich preset (default: the paper's)"
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
    instance = preset_name(
        f.num_states, f.dim, f.num_motifs, f.motif_length, f.quantization or f.motif_length
    )
    if args.budget < args.num_particles:
        parser.error(
            f"--budget {args.budget} is below one population of {args.num_particles} particles"
        )
    steps = args.budget // args.num_particles
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    print(
        f"GA on {args.preset} (seed {f.random_seed}): {args.num_particles} particles, mutation "
        f"{args.mutation_prob}, recombination {args.recombine_prob}, survival quantile "
        f"{args.survival_quantile}; {steps} steps = {steps * args.num_particles} oracle calls per "
        "seed (the start population is given)"
    )
    with tqdm(total=len(args.seeds) * (steps + 1), desc="ga", unit="round") as bar:
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
            rows += [
                {"instance": instance, "method": "ga", "seed": seed, **h} for h in result.history
            ]
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
    final = [r["min_regret"] for r in rows if r["round"] == steps]
    print(f"final min regret over seeds: mean {sum(final) / len(final):.4f}, best {min(final):.4f}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


# ---------------------------------------------------------------------- llome bench llome


def _bar_reporter(bar: Any, postfix: dict[str, Any]) -> Any:
    """A progress reporter that shows the phase and step on a tqdm bar beside ``postfix``."""

    def report(phase: str, step: int, total: int) -> None:
        bar.set_postfix({**postfix, "phase": phase, "step": f"{step}/{total}"})

    return report


def llome_parser() -> argparse.ArgumentParser:
    """The flags of ``llome bench llome``; defaults are the paper's."""
    import torch

    from llome_core.config import ModelConfig, TrainConfig

    t, ga = TrainConfig(), GAConfig()
    parser = argparse.ArgumentParser(
        prog="llome bench llome",
        description="LLOME on an Ehrlich function, seeded from the GA, next to the GA at the same "
        "oracle budget; writes OUT/results.csv, OUT/proposals.csv and OUT/regret.png. Defaults "
        "are the paper's.",
    )
    parser.add_argument(
        "--objective",
        default="marge",
        help="sft|dpo|marge|reinforce|sft1-marge9, or several separated by commas",
    )
    parser.add_argument(
        "--preset",
        default=PAPER_PRESET,
        help="Ehrlich instance by name (any ehr_v-V_l-LLL_m-C_c-K_q-Q shape); default: the paper's",
    )
    parser.add_argument(
        "--ehrlich-seed", type=int, default=None, help="instance seed (default: the paper's 50494)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="outer rounds")
    parser.add_argument(
        "--budget", type=int, default=2000, help="oracle calls per outer round (the spec's N)"
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=[0, 1, 2],
        help="run seeds (the model, training and sampling streams)",
    )
    parser.add_argument("--out", default="bench-out/llome")
    parser.add_argument(
        "--model",
        default=None,
        help="a local Hugging Face causal-LM directory (default: a tiny GPT-NeoX built locally)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ga-particles", type=int, default=ga.num_particles)
    parser.add_argument(
        "--ga-steps",
        type=int,
        default=ga.num_steps,
        help="GA steps that make the seed data (steps x particles oracle calls)",
    )
    parser.add_argument(
        "--ga-mutation-prob",
        type=float,
        default=ga.mutation_prob,
        help="the GA's mutation rate (seed data and baseline; default the paper's)",
    )
    parser.add_argument(
        "--ga-seed",
        type=int,
        default=GA_SEED,
        help="the seed-data GA's seed (default: the spec's 50494); the GA "
        "baseline of run seed s uses GA_SEED + s, so seed 0 continues the seed data",
    )
    parser.add_argument(
        "--num-seeds",
        type=int,
        default=None,
        help="refinement seeds (default: by the budget, llome_core.config."
        "refinement_budget: 200 at N = 2000)",
    )
    parser.add_argument("--refine-steps", type=int, default=10)
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="samples per temperature and step (default: by the budget, 10 at 2000)",
    )
    parser.add_argument(
        "--decoding",
        choices=("constrained", "free"),
        default="constrained",
        help="constrained (ours: every sample parses) or free (the paper's: sample, "
        "parse, drop failures)",
    )
    parser.add_argument("--format", choices=("json", "compact"), default="json")
    parser.add_argument("--hidden-size", type=int, default=ModelConfig().hidden_size)
    parser.add_argument("--num-layers", type=int, default=ModelConfig().num_layers)
    parser.add_argument("--num-heads", type=int, default=ModelConfig().num_heads)
    parser.add_argument(
        "--same-learning-rate",
        "--learning-rate",
        dest="learning_rate",
        type=float,
        default=None,
        metavar="LR",
        help="one learning rate for every objective of the schedule (default: each "
        "objective's own for the model kind, llome_core.training)",
    )
    parser.add_argument(
        "--checkpoint-fallback",
        choices=("final", "start"),
        default=t.checkpoint_fallback,
        help="when no checkpoint passes the format check: keep the final weights "
        "(the authors' trainers, default) or go back to the round's start",
    )
    parser.add_argument("--first-round-epochs", type=int, default=None)
    parser.add_argument(
        "--replay-fraction",
        type=float,
        default=0.0,
        help="share of older labels trained on again (default 0, the paper's)",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=t.max_examples,
        help="at most this many training pairs/triples per round (default: all)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def loop_config(args: argparse.Namespace, objective: str, seed: int) -> Any:
    """The :class:`~llome_core.config.LoopConfig` of ``llome bench llome``'s flags."""
    from llome_core.config import GenerateConfig, LoopConfig, ModelConfig, TrainConfig

    return LoopConfig(
        objective=objective,
        rounds=args.rounds,
        batch_size=args.budget,
        seed=seed,
        device=args.device,
        model=ModelConfig(
            path=args.model,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            num_heads=args.num_heads,
            text_format=args.format,
        ),
        train=TrainConfig(
            learning_rate=args.learning_rate,
            first_round_epochs=args.first_round_epochs,
            replay_fraction=args.replay_fraction,
            max_examples=args.max_examples,
            checkpoint_fallback=args.checkpoint_fallback,
        ),
        generate=GenerateConfig(
            num_seeds=args.num_seeds,
            num_steps=args.refine_steps,
            samples_per_step=args.samples,
            decoding=args.decoding,
        ),
    )


def llome_main(argv: list[str] | None = None) -> int:
    """``llome bench llome``: the whole bilevel loop on an Ehrlich function, next to the GA."""
    import torch
    from tqdm import tqdm

    from llome_core.ehrlich import Ehrlich, preset_config, preset_name
    from llome_core.ga import run_ga
    from llome_core.loop import LlomeLoop
    from llome_core.optimizer import Labelled
    from llome_core.sequences import Alphabet

    parser = llome_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        shape = (
            preset_config(args.preset)
            if args.ehrlich_seed is None
            else preset_config(args.preset, args.ehrlich_seed)
        )
    except ValueError as exc:
        parser.error(str(exc))
    f = Ehrlich.from_config(shape)
    instance = preset_name(
        f.num_states, f.dim, f.num_motifs, f.motif_length, f.quantization or f.motif_length
    )
    letters = Alphabet.for_ehrlich(f.num_states)
    objectives = [o.strip() for o in args.objective.split(",") if o.strip()]
    seed_calls = args.ga_particles * args.ga_steps
    total_calls = seed_calls + args.rounds * args.budget
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    proposals: list[dict[str, Any]] = []
    first = loop_config(args, objectives[0], args.seeds[0])
    print(
        f"LLOME {objectives} on {instance} (seed {f.random_seed}): GA seed data {seed_calls} "
        f"calls (GA seed {args.ga_seed}), then {args.rounds} rounds of {args.budget}; "
        f"refinement {first.generate.num_seeds} seeds x {first.generate.num_steps} steps x "
        f"{first.generate.samples_per_step} samples; decoding {args.decoding}; GA baseline at "
        f"{total_calls} calls; device {args.device}"
    )

    def label(x: torch.Tensor) -> Labelled:
        x = x.reshape(-1, f.dim)  # a round whose every output failed to parse proposes nothing
        if len(x) == 0:
            return Labelled(x, torch.zeros(0), torch.zeros(0, dtype=torch.bool))
        values, feasible = f.evaluate(x)
        return Labelled(x, values, feasible)

    ga_config = GAConfig(
        num_particles=args.ga_particles,
        mutation_prob=args.ga_mutation_prob,
        num_steps=args.ga_steps,
        seed=args.ga_seed,
    )
    seed_data = run_ga(f, ga_config).dataset
    seed_best = float(seed_data.values.max())
    bar = tqdm(total=len(args.seeds) * len(objectives) * args.rounds, desc="llome", unit="round")
    for seed in args.seeds:
        started = time.perf_counter()
        baseline = run_ga(
            f,
            replace(ga_config, seed=args.ga_seed + seed),
            budget=total_calls,
        )
        rows += [
            {"instance": instance, "method": "ga", "seed": seed, **h} for h in baseline.history
        ]
        tqdm.write(
            f"seed {seed}: GA seed data {len(seed_data)} sequences, best f {seed_best:.4f}; "
            f"GA alone reaches {baseline.best_value:.4f} at {total_calls} calls "
            f"({time.perf_counter() - started:.1f} s)"
        )
        for objective in objectives:
            config = loop_config(args, objective, seed)
            method = method_name(objective, args.decoding, args.learning_rate)
            loop = LlomeLoop(
                config,
                num_states=f.num_states,
                dim=f.dim,
                workdir=out / "runs" / f"{method}-seed{seed}",
                feasible=f.is_feasible,
            )
            common = {
                "instance": instance,
                "method": method,
                "decoding": args.decoding,
                "seed": seed,
            }
            loop.tell(seed_data)
            best, calls = seed_best, seed_calls
            wall, cpu = time.perf_counter(), time.process_time()
            rows.append(
                {
                    **common,
                    "round": 0,
                    "oracle_calls": calls,
                    "min_regret": 1 - best,
                    "seconds": 0.0,
                    "cpu_seconds": 0.0,
                }
            )
            while not loop.done:
                postfix = {"seed": seed, "method": method, "round": loop.round + 1}
                bar.set_postfix(postfix)
                proposal = loop.ask(reporter=_bar_reporter(bar, postfix))
                batch = label(proposal.sequences)
                loop.tell(batch)
                calls += len(batch)
                best = max(best, float(batch.values.max()) if len(batch) else 0.0)
                m = proposal.metrics
                trained = next(h for h in reversed(loop.history) if h["step"] == "train")
                rows.append(
                    {
                        **common,
                        "objective": m.get("objective"),
                        "learning_rate": trained.get("learning_rate"),
                        "round": loop.round,
                        "oracle_calls": calls,
                        "min_regret": 1 - best,
                        "mean_regret": float(1 - batch.values.mean()) if len(batch) else None,
                        "feasible_frac": float(batch.feasible.float().mean())
                        if len(batch)
                        else None,
                        "unique_frac": m.get("unique_frac"),
                        "mean_edit_distance": m.get("mean_edit_distance"),
                        "parse_fail_frac": m.get("parse_fail_frac"),
                        "seconds": time.perf_counter() - wall,
                        "cpu_seconds": time.process_time() - cpu,
                    }
                )
                proposals += [
                    {
                        "instance": instance,
                        "method": method,
                        "seed": seed,
                        "round": loop.round,
                        "position": i,
                        "sequence": letters.decode_one(c.sequence),
                    }
                    for i, c in enumerate(proposal.candidates)
                ]
                bar.update(1)
                if best >= 1.0:  # the optimum: nothing left to find
                    bar.update(args.rounds - loop.round)
                    break
            tqdm.write(
                f"seed {seed} {method}: min regret {1 - best:.4f} after {calls} calls "
                f"({time.perf_counter() - wall:.0f} s)"
            )
    bar.close()
    csv_path = write_csv(rows, out / "results.csv")
    with (out / "proposals.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["instance", "method", "seed", "round", "position", "sequence"]
        )
        writer.writeheader()
        writer.writerows(proposals)
    png_path = plot_regret(
        rows, out / "regret.png", f"{instance}: LLOME vs GA, {len(args.seeds)} seeds"
    )
    print(f"wrote {csv_path}, {out / 'proposals.csv'} and {png_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(llome_main())
