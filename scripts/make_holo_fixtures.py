"""Write golden fixtures from the authors' pytorch-holo into tests/data/ (run inside the holo venv).

    WANDB_MODE=disabled $(scripts/holo_venv.sh) scripts/make_holo_fixtures.py

It imports nothing from llome: the fixtures are holo's answers only. Outputs:
- tests/data/holo_ehrlich.json: for many shapes and seeds (the paper's instance, the five variants,
  small and random ones, quantized and epistatic ones, seeds holo rejects): transition matrix,
  stationary law, motifs, spacings, initial solutions for several n, optimal solution, and holo's
  values of random, DMP-sampled and near-optimal sequences.
- tests/data/holo_ga.json: DiscreteEvolution trajectories (small populations, a few steps) driven
  by a noiseless Ehrlich oracle, with the global torch RNG seeded as the authors' script does.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import torch
from holo.optim import DiscreteEvolution
from holo.test_functions.closed_form import Ehrlich
from holo.test_functions.elemental import sample_dmp

OUT = (
    Path(sys.argv[1])
    if len(sys.argv) > 1
    else Path(__file__).resolve().parents[1] / "tests" / "data"
)
PAPER_SEED = 50494
PRESETS = [
    (32, 32, 4, 4, 4),
    (32, 32, 4, 4, 2),
    (32, 128, 4, 4, 4),
    (32, 128, 4, 4, 2),
    (32, 128, 8, 8, 8),
    (8, 128, 8, 8, 8),
]
# (v, L, c, k, q, epistasis)
SMALL = [
    (8, 16, 2, 3, 3, 0.0),
    (8, 16, 2, 4, 2, 0.0),
    (8, 16, 4, 4, None, 0.0),
    (4, 8, 2, 2, None, 0.0),
    (3, 6, 1, 3, 1, 0.0),
    (5, 10, 2, 2, 1, 0.0),
    (16, 24, 3, 4, 2, 0.0),
    (20, 40, 5, 3, 3, 0.0),
    (32, 64, 2, 8, 4, 0.0),
    (2, 4, 1, 2, None, 0.0),
    (32, 32, 4, 4, 4, 0.5),
    (8, 16, 2, 4, 2, -0.25),
    (16, 32, 2, 4, 4, 1.0),
    (12, 20, 2, 5, 5, 0.3),
]
NUM_SEQS = 16  # of each kind per instance


def floats(t: torch.Tensor) -> list:
    """float32 values as JSON numbers: a float32 widened to a Python float round-trips exactly."""
    return t.to(torch.float64).tolist()


def holo_values(fn: Ehrlich, x: torch.Tensor) -> list:
    """holo's values (evaluate_true: no noise draw); -inf written as None."""
    v = fn.evaluate_true(x)
    return [None if not torch.isfinite(a) else float(a) for a in v]


def instance_fixture(v, L, c, k, q, eps, seed, rng: random.Random) -> dict:
    params = dict(
        num_states=v,
        dim=L,
        num_motifs=c,
        motif_length=k,
        quantization=q,
        epistasis_factor=eps,
        random_seed=seed,
    )
    try:
        fn = Ehrlich(v, L, c, k, q, epistasis_factor=eps, random_seed=seed)
    except Exception as err:  # holo rejects this draw (not ergodic): our tests expect a ValueError
        return {"params": params, "error": f"{type(err).__name__}: {err}"}
    opt = fn.optimal_solution()
    inits = {str(n): fn.initial_solution(n).reshape(n, L).tolist() for n in (1, 3, 7)}
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    random_x = torch.randint(v, (NUM_SEQS, L), generator=g)
    dmp_x = sample_dmp(
        fn.stationary_dist.squeeze(-1), fn.transition_matrix, L, NUM_SEQS, generator=g
    )
    near = opt.unsqueeze(0).repeat(NUM_SEQS, 1)
    for i in range(NUM_SEQS):
        num_mut = 1 + i % 3
        pos = torch.randperm(L, generator=g)[:num_mut]
        near[i, pos] = torch.randint(v, (num_mut,), generator=g)
    # DMP samples with a motif planted at its spacing: partial and full single-motif matches
    planted = dmp_x.clone()
    for i in range(NUM_SEQS):
        m = i % c
        offs = torch.cat([torch.zeros(1, dtype=torch.long), fn.spacings[m].cumsum(0)])
        start = int(torch.randint(L - int(offs[-1]), (1,), generator=g))
        keep = torch.rand(k, generator=g) < 0.75
        planted[i, start + offs[keep]] = fn.motifs[m][keep]
    seqs = torch.cat([random_x, dmp_x, near, planted, opt.unsqueeze(0)])
    kinds = (
        ["random"] * NUM_SEQS
        + ["dmp"] * NUM_SEQS
        + ["near_optimal"] * NUM_SEQS
        + ["planted"] * NUM_SEQS
        + ["optimal"]
    )
    return {
        "params": params,
        "transition_matrix": floats(fn.transition_matrix),
        "stationary_dist": floats(fn.stationary_dist.squeeze(-1)),
        "motifs": [m.tolist() for m in fn.motifs],
        "spacings": [s.tolist() for s in fn.spacings],
        "initial_solution": inits,
        "optimal_solution": opt.tolist(),
        "sequences": seqs.tolist(),
        "kinds": kinds,
        "values": holo_values(fn, seqs),
    }


def ga_fixture(
    shape, seed, num_particles, mutation_prob, recombine_prob, survival_quantile, steps, torch_seed
) -> dict:
    v, L, c, k, q = shape
    fn = Ehrlich(v, L, c, k, q, random_seed=seed)
    # the authors' script: a 1-D float32 parameter from initial_solution(), then torch.manual_seed
    start = fn.initial_solution().to(torch.float32)
    params = [torch.nn.Parameter(start)]
    torch.manual_seed(torch_seed)
    opt = DiscreteEvolution(
        params,
        vocab=list(range(v)),
        mutation_prob=mutation_prob,
        recombine_prob=recombine_prob,
        num_particles=num_particles,
        survival_quantile=survival_quantile,
    )

    def closure(param_list):
        return -fn.evaluate_true(param_list[0])  # the negated, noiseless oracle: +inf if infeasible

    trajectory = []
    for _ in range(steps):
        loss = opt.step(closure)
        particles = opt.state[params[0]]["particles"]
        trajectory.append(
            {
                "losses": [None if not torch.isfinite(a) else float(a) for a in opt.particle_loss],
                "best_loss": None if not torch.isfinite(loss) else float(loss),
                "best": params[0].data.long().tolist(),
                "particles": particles.long().tolist(),
            }
        )
    return {
        "ehrlich": dict(
            num_states=v, dim=L, num_motifs=c, motif_length=k, quantization=q, random_seed=seed
        ),
        "ga": dict(
            num_particles=num_particles,
            mutation_prob=mutation_prob,
            recombine_prob=recombine_prob,
            survival_quantile=survival_quantile,
            seed=torch_seed,
        ),
        "start": start.long().tolist(),
        "trajectory": trajectory,
    }


def main() -> None:
    rng = random.Random(0)
    instances = []
    for shape in PRESETS:
        instances.append(instance_fixture(*shape, 0.0, PAPER_SEED, rng))
        instances.append(instance_fixture(*shape, 0.0, rng.randint(0, 2**16), rng))
    for shape in SMALL:
        for _ in range(3):
            instances.append(instance_fixture(*shape, rng.randint(0, 2**16), rng))
    ga = [
        ga_fixture((32, 32, 4, 4, 4), PAPER_SEED, 40, 0.005, 0.0882, 0.1, 4, PAPER_SEED),
        ga_fixture((32, 32, 4, 4, 4), PAPER_SEED, 30, 0.05, 0.3, 0.2, 5, 7),
        ga_fixture((8, 16, 2, 3, 3), 101, 24, 0.1, 0.5, 0.25, 6, 3),
        ga_fixture((8, 16, 4, 4, 2), 12345, 20, 0.2, 0.0, 0.5, 5, 11),
        ga_fixture((32, 128, 4, 4, 2), PAPER_SEED, 16, 0.02, 0.0882, 0.25, 3, 5),
        # almost every child infeasible: the quantile is +inf or NaN and every particle survives
        ga_fixture((32, 32, 4, 4, 4), 77, 20, 0.6, 0.5, 0.1, 4, 13),
    ]
    meta = {
        "generator": "scripts/make_holo_fixtures.py",
        "holo": "pytorch-holo 0.0.5",
        "torch": torch.__version__,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "holo_ehrlich.json").write_text(
        json.dumps({"meta": meta, "instances": instances}, separators=(",", ":"))
    )
    (OUT / "holo_ga.json").write_text(json.dumps({"meta": meta, "runs": ga}, separators=(",", ":")))
    ok = sum("error" not in i for i in instances)
    print(
        f"{len(instances)} instances ({ok} built, {len(instances) - ok} rejected by holo), {len(ga)} GA runs -> {OUT}"
    )


if __name__ == "__main__":
    main()
