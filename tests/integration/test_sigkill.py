"""A worker SIGKILLed in the middle of a round: after a new worker starts, the round completes
once, with no duplicate job, batch or label, and no label lost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.config import Settings
from api.main import create_app
from api.models import Batch, Candidate, Job, Measurement, Round
from tests.conftest import make_key
from tests.integration.conftest import (
    TINY_EHRLICH_CAMPAIGN,
    Procs,
    auth,
    clean_env,
    poll_campaign,
    wait_until,
)

pytestmark = pytest.mark.integration
REDIS_DB = 12


def test_a_round_survives_its_worker_being_killed_mid_training(
    module_pg_url: str, redis_db: str, tmp_path: Path, module_session_factory
) -> None:  # type: ignore[no-untyped-def]
    pg_url, session_factory = module_pg_url, module_session_factory
    knobs = {
        "LLOME_LEASE_S": "4",
        "LLOME_RECOVERY_INTERVAL_S": "1",
        "LLOME_VISIBILITY_TIMEOUT_S": "10",
        "LLOME_PROGRESS_INTERVAL_S": "0.2",
    }
    env = clean_env(
        DATABASE_URL=pg_url, REDIS_URL=redis_db, LLOME_DATA_DIR=str(tmp_path / "data"), **knobs
    )
    settings = Settings(database_url=pg_url, redis_url=redis_db, data_dir=tmp_path / "data")
    procs = Procs(tmp_path, env)
    try:
        # the real app, publishing to Redis, with a lab's key
        with TestClient(
            create_app(settings, migrate=False), headers=auth(make_key(session_factory))
        ) as client:
            # Training long enough (seconds, not one) that the kill lands inside it on any machine.
            slow = {**TINY_EHRLICH_CAMPAIGN["optimizer"], "train": {"first_round_epochs": 30}}
            body = {**TINY_EHRLICH_CAMPAIGN, "rounds": 1, "optimizer": slow}
            cid = client.post("/campaigns", json=body).json()["id"]
            first = procs.worker("worker-a")

            def training() -> Job | None:
                with session_factory() as s:
                    job = s.scalar(select(Job).where(Job.campaign_id == cid, Job.step == "train"))
                return (
                    job
                    if job is not None and job.status == "running" and job.progress_step
                    else None
                )

            try:
                wait_until(training, 180, "the train step to report progress")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{procs.logs()}") from None
            first.kill()
            with session_factory() as s:
                killed = s.scalar(select(Job).where(Job.campaign_id == cid, Job.step == "train"))
            assert killed.status == "running" and killed.attempt == 1  # nobody gave it back

            procs.worker("worker-b")
            done = poll_campaign(client, cid, {"completed"}, 240, procs)
            assert done["round"] == 1 and done["error"] is None

        with session_factory() as s:
            jobs = list(s.scalars(select(Job).where(Job.campaign_id == cid)))
            assert Counter((j.round, j.step) for j in jobs) == {
                (0, "seed"): 1,
                (1, "train"): 1,
                (1, "generate"): 1,
                (1, "label"): 1,
            }
            train = next(j for j in jobs if j.step == "train")
            assert (train.status, train.attempt) == ("succeeded", 2)
            assert all(j.status == "succeeded" for j in jobs)
            batches = list(s.scalars(select(Batch).where(Batch.campaign_id == cid)))
            assert [(b.round, b.status) for b in batches] == [(1, "labelled")]
            cands = list(s.scalars(select(Candidate.id).where(Candidate.batch_id == batches[0].id)))
            labels = list(
                s.scalars(
                    select(Measurement.candidate_id).where(Measurement.batch_id == batches[0].id)
                )
            )
            assert (
                sorted(labels) == sorted(cands) and len(cands) == batches[0].size
            )  # each once, none lost
            seed_round = s.scalar(select(Round).where(Round.campaign_id == cid, Round.number == 0))
            seeds = s.scalar(
                select(func.count())
                .select_from(Measurement)
                .where(Measurement.campaign_id == cid, Measurement.source == "seed_ga")
            )
            assert seeds == seed_round.proposal_metrics["seed_sequences"]
            round1 = s.scalar(select(Round).where(Round.campaign_id == cid, Round.number == 1))
            # the checkpoint in force is the one the second attempt wrote
            assert "attempt-2" in round1.checkpoint_path and Path(round1.checkpoint_path).exists()
    finally:
        procs.stop_all()
