"""``llome bench ehrlich-speed``: evaluations per second of our Ehrlich vs pytorch-holo's.

Both evaluate the same batch (DMP samples of the paper's instance, v=32, L=32, c=4, k=4, q=4;
10^5 rows by default) in the same run: ours in this process, holo's in the throwaway venv built by
``scripts/holo_venv.sh`` (holo never enters our environment), one after the other so they never
share the cores. The holo side also returns its values, so the run checks parity on the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llome_core.ehrlich import Ehrlich, preset_config

ROOT = Path(__file__).resolve().parents[1]
HOLO_VENV_SCRIPT = ROOT / "scripts" / "holo_venv.sh"

# Runs inside the holo venv: times holo's forward (what a user calls; it casts to float) and
# evaluate_true (no input cast, no noise), and saves the values for the parity check.
_HOLO_SNIPPET = r"""
import json, os, sys, time
os.environ.setdefault("WANDB_MODE", "disabled")
import torch
from holo.test_functions.closed_form import Ehrlich
cfg, batch_path, values_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
repeats = int(sys.argv[4])
if int(sys.argv[5]) > 0:
    torch.set_num_threads(int(sys.argv[5]))
x = torch.load(batch_path)
f = Ehrlich(cfg["num_states"], cfg["dim"], cfg["num_motifs"], cfg["motif_length"],
            cfg["quantization"], epistasis_factor=cfg["epistasis_factor"],
            random_seed=cfg["random_seed"])
def best(fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)
out = {"forward_s": best(lambda: f(x)), "evaluate_true_s": best(lambda: f.evaluate_true(x))}
torch.save(f.evaluate_true(x), values_path)
print(json.dumps(out))
"""


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _report(name: str, seconds: float, batch: int) -> None:
    rate = batch / seconds / 1e6
    print(f"{name + ':':20s}{rate:8.2f} M evaluations/s  ({seconds * 1e3:.1f} ms per call)")


def _holo_python(path: str | None, build: bool) -> str | None:
    if path:
        return path
    default = Path(os.environ.get("HOLO_VENV", "/tmp/holo-venv"))
    if (default / ".holo-ok").exists():
        return str(default / "bin" / "python")
    if not build:
        return None
    print(
        f"building the pytorch-holo venv with {HOLO_VENV_SCRIPT.relative_to(ROOT)} "
        "(about a minute, once)..."
    )
    try:
        done = subprocess.run(
            ["bash", str(HOLO_VENV_SCRIPT), str(default)],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"could not build the holo venv: {err}")
        return None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"could not build the holo venv (exit {done.returncode}):\n{tail}")
        return None
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llome bench ehrlich-speed",
        description="Ehrlich evaluations per second, ours vs pytorch-holo's, on the same batch.",
    )
    parser.add_argument(
        "--batch", type=int, default=100_000, help="sequences per call (default 100000)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed calls per implementation; the best counts (default 5)",
    )
    parser.add_argument(
        "--preset",
        default="ehr_v-32_l-032_m-4_c-4_q-4",
        help="Ehrlich preset (default: the paper's)",
    )
    parser.add_argument(
        "--holo-python",
        default=None,
        help="python of a venv with pytorch-holo (default: build /tmp/holo-venv)",
    )
    parser.add_argument("--no-holo", action="store_true", help="time ours only")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both sides (default: torch's default); 1 gives a fairer figure "
        "on a busy machine, where holo's multithreaded ops suffer most",
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be positive")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = preset_config(args.preset)
    f = Ehrlich.from_config(config)
    x = f.initial_solution(args.batch)  # DMP samples: feasible, realistic motif hits
    ours_s = _best_time(lambda: f.evaluate(x), args.repeats)
    print(f"instance {args.preset} (seed {config.random_seed}), batch {args.batch:,}, ", end="")
    print(f"best of {args.repeats} calls, torch threads {torch.get_num_threads()}")
    _report("llome", ours_s, args.batch)

    python = None if args.no_holo else _holo_python(args.holo_python, build=True)
    if python is None:
        print(
            "pytorch-holo is not available: timed ours alone"
            + (" (--no-holo)" if args.no_holo else "")
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        batch_path, values_path = Path(tmp) / "batch.pt", Path(tmp) / "values.pt"
        torch.save(x, batch_path)
        cfg = json.dumps(vars(config))
        env = dict(os.environ, WANDB_MODE="disabled")
        done = subprocess.run(
            [
                python,
                "-c",
                _HOLO_SNIPPET,
                cfg,
                str(batch_path),
                str(values_path),
                str(args.repeats),
                str(args.threads or 0),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            print(f"pytorch-holo failed (exit {done.returncode}); timed ours alone:\n{tail}")
            return 0
        holo = json.loads(done.stdout.strip().splitlines()[-1])
        holo_values = torch.load(values_path)
    ours_values, feasible = f.evaluate(x)
    same = torch.equal(
        torch.where(feasible, ours_values, torch.full_like(ours_values, -float("inf"))), holo_values
    )
    _report("holo forward", holo["forward_s"], args.batch)
    _report("holo evaluate_true", holo["evaluate_true_s"], args.batch)
    # the ratio against holo's faster entry point, so the figure is never flattering
    holo_best = min(holo["forward_s"], holo["evaluate_true_s"])
    print(f"ratio: {holo_best / ours_s:.1f}x holo's faster entry point")
    print(f"same values as holo on this batch: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
