"""Why was this proposed? (issue 8) Lineage of every candidate of a real LLOME round: stored
when the candidate is made, consistent with what the loop had."""

from __future__ import annotations

import csv
import io
import random

from sqlalchemy import select

from api.models import Round
from api.notation import apply_mutations, mutations
from tests.conftest import drain

ALPHABET = "ACDEFGHIKL"
LENGTH = 8
TINY_LLOME = {
    "kind": "llome",
    "objective": "sft",
    "train": {"first_round_epochs": 1},
    "generate": {"num_seeds": 4, "num_steps": 2, "samples_per_step": 1, "temperatures": [1.0]},
}


def library(parent: str, n: int = 40, seed: int = 3) -> list[str]:
    """The parent and point mutants of it (what a real seed library looks like)."""
    rng = random.Random(seed)
    out = {parent}
    while len(out) < n:
        s = list(parent)
        for pos in rng.sample(range(LENGTH), rng.choice([1, 2])):
            s[pos] = rng.choice(ALPHABET)
        out.add("".join(s))
    return sorted(out)


def test_mutations_are_proteingym_notation_and_round_trip() -> None:
    assert mutations("AKCD", "DRCD") == "A1D:K2R"
    assert mutations("AKCD", "AKCD") == "" and mutations(None, "AKCD") is None
    assert apply_mutations("AKCD", "A1D:K2R") == "DRCD"


def test_lineage_of_every_candidate_of_a_real_round(
    client, runtime, publisher, session_factory
) -> None:
    reference = "ACDEFGHI"
    seeds = library(reference)
    body = {
        "name": "lineage",
        "oracle": {
            "kind": "wetlab",
            "alphabet": ALPHABET,
            "length": LENGTH,
            "reference": reference,
        },
        "optimizer": TINY_LLOME,
        "batch_size": 8,
        "rounds": 2,
        "seed": 1,
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
    }
    cid = client.post("/campaigns", json=body).json()["id"]
    rng = random.Random(0)
    data = "sequence,score\n" + "".join(f"{s},{rng.random():.3f}\n" for s in seeds)
    assert (
        client.post(
            f"/campaigns/{cid}/measurements",
            files={"file": ("seed.csv", data.encode(), "text/csv")},
        ).status_code
        == 201
    )
    drain(runtime, publisher)
    camp = client.get(f"/campaigns/{cid}").json()
    assert camp["status"] == "awaiting_labels", camp
    with session_factory() as s:
        rnd = s.scalar(select(Round).where(Round.campaign_id == cid, Round.number == 1))
        assert rnd is not None
        sha, temperatures = rnd.checkpoint_sha256, (rnd.proposal_metrics or {}).get("temperatures")
    assert sha and len(sha) == 64
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    cands = client.get(f"/campaigns/{cid}/batches/{bid}").json()["candidates"]
    assert cands
    for c in cands:
        d = client.get(f"/campaigns/{cid}/candidates/{c['candidate_id']}").json()
        assert d["round"] == 1 and d["status"] == "proposed" and d["sequence"] == c["sequence"]
        assert d["seed"] in seeds  # every trajectory starts from a labelled sequence
        assert d["parent_sequence"] is not None and d["refinement_step"] is not None
        assert 1 <= d["refinement_step"] <= TINY_LLOME["generate"]["num_steps"]
        if d["refinement_step"] == 1:  # the first step refines the trajectory's seed itself
            assert d["parent_sequence"] == d["seed"]
        assert apply_mutations(d["parent_sequence"], d["mutations"]) == d["sequence"]
        assert d["mutations"] == mutations(d["parent_sequence"], d["sequence"])
        assert d["reference_sequence"] == reference
        assert apply_mutations(reference, d["reference_mutations"]) == d["sequence"]
        assert d["objective"] == "sft" and d["checkpoint_sha256"] == sha
        # the round's sampling temperatures (§3.5 picks them from the previous round); None: greedy
        assert d["temperature"] is None or d["temperature"] in temperatures
        assert d["log_likelihood"] is not None
    # the template names each candidate's mutations against the reference
    rows = list(
        csv.DictReader(io.StringIO(client.get(f"/campaigns/{cid}/batches/{bid}/template.csv").text))
    )
    first = client.get(f"/campaigns/{cid}/candidates/{cands[0]['candidate_id']}").json()
    assert (
        rows[0]["sequence"] == first["sequence"]
        and rows[0]["mutant"] == first["reference_mutations"]
    )
