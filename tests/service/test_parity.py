"""One algorithm: ``llome bench llome`` and a service campaign on the embedded default (SQLite and
the in-process worker, driven through the real app) propose the same first batch for the same
Ehrlich instance, seed data, seed and config."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

INSTANCE = "ehr_v-8_l-008_m-2_c-2_q-2"
EHRLICH = {
    "kind": "ehrlich",
    "preset": INSTANCE,
    "seed": 3,
    "seeding": {"num_particles": 60, "num_steps": 3, "mutation_prob": 0.05, "seed": 11},
}
TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2}
BATCH = 8


def campaign_first_batch(tmp: Path) -> tuple[list[str], dict, dict]:  # type: ignore[type-arg]
    """The first batch (and the campaign and its metrics) of an Ehrlich LLOME campaign."""
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.db import session_scope, upgrade
    from api.main import create_app
    from api.services.labs import create_key
    from worker.embedded import EmbeddedWorker

    settings = Settings(
        database_url=f"sqlite:///{tmp}/llome.db",
        redis_url=None,
        data_dir=tmp / "data",
        progress_interval_s=0.5,
        torch_threads=1,
    )
    upgrade(settings)
    worker = EmbeddedWorker(settings).start()
    try:
        app = create_app(settings, publisher=worker.publisher, migrate=False)
        with session_scope(app.state.session_factory) as s:
            _, key = create_key(s, "parity")
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            body = {
                "name": "parity",
                "oracle": EHRLICH,
                "batch_size": BATCH,
                "rounds": 1,
                "seed": 0,
                "model": TINY,
                "optimizer": {
                    "kind": "llome",
                    "objective": "sft",
                    "train": {"first_round_epochs": 1, "replay_fraction": 0.0},
                    "generate": {"num_steps": 2},
                },
            }
            r = client.post("/campaigns", json=body)
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            deadline = time.monotonic() + 240
            while True:
                got = client.get(f"/campaigns/{cid}").json()
                if got["status"] in ("completed", "failed") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert got["status"] == "completed", got
            bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
            batch = client.get(f"/campaigns/{cid}/batches/{bid}").json()
            metrics = client.get(f"/campaigns/{cid}/metrics").json()
    finally:
        worker.stop()
    cands = sorted(
        (c for c in batch["candidates"] if not c["is_control"]), key=lambda c: c["candidate_id"]
    )
    return [c["sequence"] for c in cands], got, metrics


def bench_first_batch(out: Path) -> tuple[list[str], list[dict]]:  # type: ignore[type-arg]
    from benchmarks.runs import llome_main, read_csv

    seeding = EHRLICH["seeding"]
    argv = [
        "--preset",
        INSTANCE,
        "--ehrlich-seed",
        "3",
        "--objective",
        "sft",
        "--rounds",
        "1",
        "--budget",
        str(BATCH),
        "--seeds",
        "0",
        "--ga-particles",
        str(seeding["num_particles"]),
        "--ga-steps",
        str(seeding["num_steps"]),
        "--ga-mutation-prob",
        str(seeding["mutation_prob"]),
        "--ga-seed",
        str(seeding["seed"]),
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--first-round-epochs",
        "1",
        "--refine-steps",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert llome_main(argv) == 0
    with (out / "proposals.csv").open(newline="") as fh:
        proposed = [r for r in csv.DictReader(fh) if r["round"] == "1"]
    return [r["sequence"] for r in sorted(proposed, key=lambda r: int(r["position"]))], read_csv(
        out / "results.csv"
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_bench_and_a_service_campaign_propose_the_same_first_batch(tmp_path: Path) -> None:
    service, campaign, metrics = campaign_first_batch(tmp_path / "service")
    bench, rows = bench_first_batch(tmp_path / "bench")
    assert len(service) == BATCH
    assert service == bench

    # the same budget rule and oracle-call accounting on both sides
    # 2 refinement steps: seeds make up the paper's 61 outputs per call (35 x 2 x 7 = 490)
    assert campaign["refinement_budget"] == {
        "num_seeds": 35,
        "num_steps": 2,
        "samples_per_step": 1,
        "outputs_per_round": 490,
        "outputs_per_oracle_call": 61.2,
    }
    seed_calls = 60 * 3  # GA steps x particles: the start population is given
    assert metrics["rounds"][0]["oracle_calls"] == seed_calls
    llome = [r for r in rows if r["method"] == "sft"]
    assert [(r["round"], r["oracle_calls"]) for r in llome] == [
        (0, seed_calls),
        (1, seed_calls + BATCH),
    ]
    assert {r["instance"] for r in rows} == {INSTANCE}
    last = llome[-1]
    assert last["objective"] == "sft" and last["decoding"] == "constrained"
    assert last["learning_rate"] is not None and last["cpu_seconds"] > 0
    assert 0 < last["mean_edit_distance"] <= 1
