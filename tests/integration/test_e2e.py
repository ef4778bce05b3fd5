"""End to end over HTTP on the real stack: ``llome serve`` (uvicorn, two web processes) on
Postgres, Redis as the broker, and a ``llome worker`` Celery process running the tiny LLOME
campaigns."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    TINY_EHRLICH_CAMPAIGN,
    TINY_LLOME,
    Procs,
    auth,
    clean_env,
    cli_key,
    free_port,
    poll_campaign,
    wait_until,
)

pytestmark = pytest.mark.integration
REDIS_DB = 11


@pytest.fixture(scope="module")
def stack(
    module_pg_url: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Procs]]:
    tmp = tmp_path_factory.mktemp("stack")
    env = clean_env(
        DATABASE_URL=module_pg_url,
        REDIS_URL=redis_db,
        LLOME_DATA_DIR=str(tmp / "data"),
        LLOME_LEASE_S="20",
        LLOME_RECOVERY_INTERVAL_S="2",
        LLOME_PROGRESS_INTERVAL_S="0.3",
    )
    procs = Procs(tmp, env)
    try:
        port = free_port()
        procs.server(port, web_processes=2)  # as deployed: one web process per core
        procs.worker()
        key = cli_key(env)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=auth(key)
        ) as client:
            yield client, procs
    finally:
        procs.stop_all()


def run_ehrlich_campaign(client: Any, procs: Procs | None, timeout: float = 300) -> dict[str, Any]:
    """Create the tiny Ehrlich LLOME campaign, watch it run two rounds, check what it left."""
    r = client.post("/campaigns", json=TINY_EHRLICH_CAMPAIGN)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    seen: set[str] = set()
    progress_seen: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        body = client.get(f"/campaigns/{cid}").json()
        seen.add(body["status"])
        if body["progress"]["percent"] is not None:
            progress_seen.append(body["progress"])
        if body["status"] == "failed":
            raise AssertionError(
                f"campaign failed: {body['error']}\n{procs.logs() if procs else ''}"
            )
        return body if body["status"] == "completed" else None

    try:
        body = wait_until(finished, timeout, f"campaign {cid} to complete", interval=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.logs() if procs else ''}") from None
    assert body["round"] == 2 and body["error"] is None
    assert "training" in seen or "generating" in seen  # polled while it worked
    assert any(p["phase"] and 0 <= p["percent"] <= 100 for p in progress_seen)

    batches = client.get(f"/campaigns/{cid}/batches").json()["items"]
    assert [(b["round"], b["status"], b["remaining"]) for b in batches] == [
        (2, "labelled", 0),
        (1, "labelled", 0),
    ]
    for b in batches:
        detail = client.get(f"/campaigns/{cid}/batches/{b['id']}").json()
        assert 0 < len(detail["candidates"]) <= 16
        assert all(
            c["status"] == "measured" and c["feasible"] is not None for c in detail["candidates"]
        )
        assert all(
            len(c["sequence"]) == 12 and set(c["sequence"]) <= set("ABCDEFGH")
            for c in detail["candidates"]
        )
    metrics = client.get(f"/campaigns/{cid}/metrics").json()
    rounds = metrics["rounds"]
    assert [m["round"] for m in rounds] == [0, 1, 2]
    assert rounds[0]["oracle_calls"] == 32 * 3  # 3 GA steps; the start population is given
    assert rounds[1]["train"]["objective"] == "sft" and rounds[2]["train"]["objective"] == "marge"
    assert all(len(m["train"]["checkpoint_sha256"]) == 64 for m in rounds[1:])
    assert all(0.0 <= m["regret"] <= 1.0 for m in rounds)
    assert rounds[2]["regret"] <= rounds[0]["regret"]  # best so far never gets worse
    png = client.get(f"/campaigns/{cid}/plot.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    export = list(csv.DictReader(io.StringIO(client.get(f"/campaigns/{cid}/export").text)))
    labelled = sum(m["labelled"] for m in rounds)
    assert len(export) == labelled
    sequences = [row["sequence"] for row in export]
    assert len(set(sequences)) == len(sequences)  # nothing proposed twice
    return body


def test_an_ehrlich_campaign_runs_two_rounds_end_to_end(stack: tuple[httpx.Client, Procs]) -> None:
    client, procs = stack
    run_ehrlich_campaign(client, procs)


# --- the wet lab ----------------------------------------------------------------------------

LAB_ALPHABET = "ACDEFGHIKL"
LAB_LENGTH = 8


class Lab:
    """A pretend assay: the fraction of positions that match a hidden target."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.target = "".join(rng.choice(LAB_ALPHABET) for _ in range(LAB_LENGTH))
        self.parent = "".join(rng.choice(LAB_ALPHABET) for _ in range(LAB_LENGTH))

    def score(self, seq: str) -> float:
        return sum(a == b for a, b in zip(seq, self.target)) / LAB_LENGTH

    def seed_library(self, n: int = 40) -> list[str]:
        """The parent and point mutants of it (what real seed libraries look like)."""
        library = {self.parent}
        while len(library) < n:
            s = list(self.parent)
            for pos in self.rng.sample(range(LAB_LENGTH), self.rng.choice([1, 2])):
                s[pos] = self.rng.choice(LAB_ALPHABET)
            library.add("".join(s))
        return sorted(library)

    def seed_csv(self) -> bytes:
        return (
            "sequence,score\n" + "".join(f"{s},{self.score(s)}\n" for s in self.seed_library())
        ).encode()

    def results_csv(self, batch_csv: str) -> bytes:
        """The downloaded batch CSV with the score column filled in."""
        rows = list(csv.DictReader(io.StringIO(batch_csv)))
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["candidate_id", "sequence", "score", "feasible"])
        for row in rows:
            w.writerow([row["candidate_id"], row["sequence"], self.score(row["sequence"]), "true"])
        return out.getvalue().encode()


def run_wetlab_campaign(client: Any, procs: Procs | None, timeout: float = 300) -> None:
    lab = Lab()
    body = {
        "name": "lab round trip",
        "oracle": {"kind": "wetlab", "alphabet": LAB_ALPHABET, "length": LAB_LENGTH},
        "optimizer": TINY_LLOME,
        "batch_size": 8,
        "rounds": 2,
        "seed": 1,
        "model": TINY_EHRLICH_CAMPAIGN["model"],
    }
    r = client.post("/campaigns", json=body)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["status"] == "created" and "measurements" in r.json()["progress"]["message"]

    seed = client.post(
        f"/campaigns/{cid}/measurements", files={"file": ("seed.csv", lab.seed_csv(), "text/csv")}
    )
    assert seed.status_code == 201, seed.text
    assert seed.json()["report"]["new_measurements"] == 40

    for round_ in (1, 2):
        waiting = poll_campaign(client, cid, {"awaiting_labels"}, timeout, procs)
        assert waiting["round"] == round_
        assert "/results" in waiting["progress"]["message"]
        newest = client.get(f"/campaigns/{cid}/batches").json()["items"][0]
        assert newest["round"] == round_ and newest["status"] == "awaiting_labels"
        for cand in client.get(f"/campaigns/{cid}/batches/{newest['id']}").json()["candidates"]:
            # lineage, stored when the candidate was made: the input it was refined from
            assert len(cand["parent"]) == LAB_LENGTH and cand["log_likelihood"] is not None
            assert cand["sequence"] != cand["parent"]
        batch_csv = client.get(
            f"/campaigns/{cid}/batches/{newest['id']}", headers={"Accept": "text/csv"}
        ).text
        results = lab.results_csv(batch_csv)
        up = client.post(
            f"/campaigns/{cid}/batches/{newest['id']}/results",
            files={"file": ("results.csv", results, "text/csv")},
        )
        assert up.status_code == 201, up.text
        assert (
            up.json()["remaining"] == 0
            and up.json()["report"]["new_measurements"] == newest["size"]
        )
        again = client.post(
            f"/campaigns/{cid}/batches/{newest['id']}/results",
            files={"file": ("results.csv", results, "text/csv")},
        )
        assert again.status_code == 200 and again.json()["already_uploaded"] is True

    done = poll_campaign(client, cid, {"completed"}, timeout, procs)
    assert done["round"] == 2
    seqs = []
    cursor = None
    while True:
        page = client.get(
            f"/campaigns/{cid}/sequences", params={"cursor": cursor} if cursor else {}
        ).json()
        seqs += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    batches = client.get(f"/campaigns/{cid}/batches").json()["items"]
    assert len(seqs) == 40 + sum(b["size"] for b in batches)  # every label stored once
    assert all(s["score"] == lab.score(s["sequence"]) for s in seqs)


def test_a_wetlab_campaign_proposes_takes_results_and_proposes_again(
    stack: tuple[httpx.Client, Procs],
) -> None:
    client, procs = stack
    run_wetlab_campaign(client, procs)
