"""Recovery with real processes: the API killed in the middle of an upload, a worker SIGKILLed
while its campaign is in the lab's labelling phase, and Redis restarted (empty) during a round.
Each ends with the campaign complete, every uploaded row stored once and no duplicate batch.

Redis restarts use a redis-server of this test's own on a free port, never the machine's 6379.
"""

from __future__ import annotations

import csv
import io
import random
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from api.models import Batch, Job, Measurement
from tests.integration.conftest import (
    TINY_EHRLICH_CAMPAIGN,
    Procs,
    auth,
    clean_env,
    cli_key,
    free_port,
    poll_campaign,
    redis_reason,
    wait_until,
)

pytestmark = pytest.mark.integration
REDIS_DB = 13
KNOBS = {
    "LLOME_LEASE_S": "4",
    "LLOME_RECOVERY_INTERVAL_S": "1",
    "LLOME_VISIBILITY_TIMEOUT_S": "8",
    "LLOME_PROGRESS_INTERVAL_S": "0.2",
}
ALPHABET, LENGTH = "ACDEFGHIKL", 10


def _seed_csv(n: int, seed: int = 3) -> bytes:
    rng = random.Random(seed)
    seqs: set[str] = set()
    while len(seqs) < n:
        seqs.add("".join(rng.choice(ALPHABET) for _ in range(LENGTH)))
    return (
        "sequence,score\n" + "".join(f"{s},{rng.random():.6f}\n" for s in sorted(seqs))
    ).encode()


def _results_csv(batch_csv: str) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["candidate_id", "score"])
    for row in csv.DictReader(io.StringIO(batch_csv)):
        w.writerow([row["candidate_id"], round(random.Random(row["sequence"]).random(), 6)])
    return out.getvalue().encode()


def _no_duplicates(session_factory, cid: int) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        jobs = Counter(
            (j.round, j.step) for j in s.scalars(select(Job).where(Job.campaign_id == cid))
        )
        assert all(n == 1 for n in jobs.values()), jobs
        batches = Counter(s.scalars(select(Batch.round).where(Batch.campaign_id == cid)))
        assert all(n == 1 for n in batches.values()), batches
        per_seq = Counter(
            s.scalars(select(Measurement.sequence_id).where(Measurement.campaign_id == cid))
        )
        assert all(n == 1 for n in per_seq.values())  # every label stored once


def test_api_killed_mid_upload_and_worker_killed_while_labelling_lose_and_double_nothing(
    module_pg_url: str, redis_db: str, tmp_path: Path, module_session_factory
) -> None:  # type: ignore[no-untyped-def]
    env = clean_env(
        DATABASE_URL=module_pg_url,
        REDIS_URL=redis_db,
        LLOME_DATA_DIR=str(tmp_path / "data"),
        **KNOBS,
    )
    procs = Procs(tmp_path, env)
    rows = 30_000
    seed = _seed_csv(rows)
    try:
        port = free_port()
        api = procs.server(port)
        key = cli_key(env, "recovery-lab")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=120, headers=auth(key)) as client:
            cid = client.post(
                "/campaigns",
                json={
                    "name": "recovery",
                    "oracle": {"kind": "wetlab", "alphabet": ALPHABET, "length": LENGTH},
                    "optimizer": {"kind": "ga", "mutation_prob": 0.2},
                    "batch_size": 20,
                    "rounds": 1,
                },
            ).json()["id"]

            # 1. The API process dies while it stores a large upload.
            outcome: dict[str, Any] = {}

            def send() -> None:
                try:
                    outcome["response"] = httpx.post(
                        f"{base}/campaigns/{cid}/measurements",
                        headers=auth(key),
                        files={"file": ("seed.csv", seed, "text/csv")},
                        timeout=120,
                    )
                except httpx.HTTPError as exc:
                    outcome["error"] = exc

            sender = threading.Thread(target=send)
            sender.start()

            def storing() -> bool:  # the upload's transaction is writing
                with module_session_factory() as s:
                    busy = s.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND state <> 'idle' "
                            "AND (query ILIKE '%INSERT INTO%' OR query ILIKE '%upload%')"
                        )
                    ).scalar()
                return bool(busy) or not sender.is_alive()

            wait_until(storing, 60, "the upload to reach the database", interval=0.02)
            api.kill()
            sender.join(60)
            killed_mid_request = "error" in outcome
            with module_session_factory() as s:
                stored = s.scalar(
                    select(func.count())
                    .select_from(Measurement)
                    .where(Measurement.campaign_id == cid)
                )
            assert stored in (0, rows)  # all or nothing, never part of the file

            procs.server(port)  # the API comes back; the client sends the same file again
            again = client.post(
                f"/campaigns/{cid}/measurements", files={"file": ("seed.csv", seed, "text/csv")}
            )
            assert again.status_code in (200, 201), again.text
            assert again.status_code == (201 if stored == 0 else 200)
            with module_session_factory() as s:
                assert (
                    s.scalar(
                        select(func.count())
                        .select_from(Measurement)
                        .where(Measurement.campaign_id == cid)
                    )
                    == rows
                )

            # 2. A worker makes the batch; then it is SIGKILLed while the lab labels it.
            worker = procs.worker("worker-a")
            waiting = poll_campaign(client, cid, {"awaiting_labels"}, 180, procs)
            worker.kill()
            bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
            batch_csv = client.get(f"/campaigns/{cid}/batches/{bid}", params={"format": "csv"}).text
            results = _results_csv(batch_csv)
            up = client.post(
                f"/campaigns/{cid}/batches/{bid}/results",
                files={"file": ("r.csv", results, "text/csv")},
            )
            assert up.status_code == 201, up.text
            assert (
                client.post(
                    f"/campaigns/{cid}/batches/{bid}/results",
                    files={"file": ("r.csv", results, "text/csv")},
                ).status_code
                == 200
            )
            procs.worker("worker-b")
            done = poll_campaign(client, cid, {"completed"}, 180, procs)
            assert done["round"] == waiting["round"] == 1
        _no_duplicates(module_session_factory, cid)
        with module_session_factory() as s:
            size = s.scalar(select(Batch.size).where(Batch.id == bid))
            total = s.scalar(
                select(func.count()).select_from(Measurement).where(Measurement.campaign_id == cid)
            )
        assert total == rows + size  # every uploaded row once, every result once
        print(
            f"API killed mid-request: {killed_mid_request}; rows stored before the retry: {stored}"
        )
    finally:
        procs.stop_all()


@pytest.fixture
def own_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A redis-server of this test's own (no persistence: a restart loses every message)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    state: dict[str, Any] = {}

    def start() -> None:
        state["p"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(
            lambda: redis_reason(f"redis://127.0.0.1:{port}/0") is None,
            20,
            "redis-server to answer",
        )

    def stop() -> None:
        p = state.get("p")
        if p is not None and p.poll() is None:
            p.terminate()
            p.wait(20)

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", start, stop
    finally:
        stop()


def test_a_round_survives_redis_restarting_empty(
    module_pg_url: str, own_redis, tmp_path: Path, module_session_factory
) -> None:  # type: ignore[no-untyped-def]
    url, start_redis, stop_redis = own_redis
    env = clean_env(
        DATABASE_URL=module_pg_url, REDIS_URL=url, LLOME_DATA_DIR=str(tmp_path / "data"), **KNOBS
    )
    procs = Procs(tmp_path, env)
    try:
        port = free_port()
        procs.server(port)
        procs.worker()
        key = cli_key(env, "redis-lab")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=auth(key)
        ) as client:
            cid = client.post("/campaigns", json={**TINY_EHRLICH_CAMPAIGN, "rounds": 1}).json()[
                "id"
            ]
            poll_campaign(client, cid, {"training", "generating"}, 180, procs)
            stop_redis()  # every queued message and the worker's connection are gone
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["broker"].startswith("error")
            start_redis()  # empty: what was queued is lost, the database still knows
            done = poll_campaign(client, cid, {"completed"}, 240, procs)
            assert done["round"] == 1 and done["error"] is None
            assert client.get("/health").status_code == 200
        _no_duplicates(module_session_factory, cid)
        with module_session_factory() as s:
            steps = {j.step: j.status for j in s.scalars(select(Job).where(Job.campaign_id == cid))}
            (size,) = s.scalars(select(Batch.size).where(Batch.campaign_id == cid))
            labels = s.scalar(
                select(func.count())
                .select_from(Measurement)
                .where(Measurement.campaign_id == cid, Measurement.source == "oracle")
            )
        assert steps == {
            "seed": "succeeded",
            "train": "succeeded",
            "generate": "succeeded",
            "label": "succeeded",
        }
        assert labels == size
    finally:
        procs.stop_all()
