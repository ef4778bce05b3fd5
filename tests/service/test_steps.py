"""Worker jobs run directly on the test database (no Celery): claims, fences,
cancellation, recovery, and whole campaigns driven task by task."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from api.db import session_scope, utcnow
from api.models import Batch, Campaign, Candidate, Job, Measurement
from api.services import jobs
from api.services.jobs import TaskName
from llome_core.progress import Cancelled
from tests.conftest import drain
from tests.service.test_campaigns import ehrlich_campaign
from worker import runner
from worker.reporting import DbReporter


def _job(session_factory, cid: int, step: str, round_: int) -> Job:  # type: ignore[no-untyped-def]
    with session_factory() as s:
        return s.scalar(
            select(Job).where(Job.campaign_id == cid, Job.step == step, Job.round == round_)
        )


def test_an_ehrlich_ga_campaign_runs_two_rounds_task_by_task(
    client, publisher, runtime, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    done = drain(runtime, publisher)
    assert [name for name, _ in done] == [
        TaskName.SEED,
        TaskName.GENERATE,
        TaskName.LABEL,
        TaskName.GENERATE,
        TaskName.LABEL,
    ]
    assert all(outcome == "succeeded" for _, outcome in done)
    body = client.get(f"/campaigns/{cid}").json()
    assert body["status"] == "completed", body
    with session_factory() as s:
        batches = list(
            s.scalars(select(Batch).where(Batch.campaign_id == cid).order_by(Batch.round))
        )
        assert [(b.round, b.status) for b in batches] == [(1, "labelled"), (2, "labelled")]
        cands = s.scalar(
            select(func.count()).select_from(Candidate).where(Candidate.campaign_id == cid)
        )
        labels = s.scalar(
            select(func.count())
            .select_from(Measurement)
            .where(Measurement.campaign_id == cid, Measurement.candidate_id.is_not(None))
        )
        assert cands == labels == sum(b.size for b in batches)
    m = client.get(f"/campaigns/{cid}/metrics").json()
    assert m["objective"] == "regret"
    assert [r["round"] for r in m["rounds"]] == [0, 1, 2]
    seed = m["rounds"][0]
    assert seed["oracle_calls"] == 32 * 2  # 2 GA steps of 32; the start population is given
    for r in m["rounds"]:
        assert 0.0 <= r["regret"] <= 1.0 and r["regret"] == pytest.approx(1.0 - r["best_so_far"])
    assert m["rounds"][2]["oracle_calls"] == seed["oracle_calls"] + sum(b.size for b in batches)
    assert [r["best_so_far"] for r in m["rounds"]] == sorted(r["best_so_far"] for r in m["rounds"])


def test_a_step_delivered_twice_runs_once(client, publisher, runtime, session_factory) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    seed_job = _job(session_factory, cid, "seed", 0)
    assert runner.run_job(runtime, seed_job.id) == "succeeded"
    assert runner.run_job(runtime, seed_job.id) == "skipped"
    with session_factory() as s:
        n = s.scalar(
            select(func.count()).select_from(Measurement).where(Measurement.campaign_id == cid)
        )
    assert n > 0
    assert _job(session_factory, cid, "seed", 0).attempt == 1


def test_a_live_lease_blocks_a_second_claim_and_an_expired_one_is_taken_over(
    client, runtime, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    job_id = _job(session_factory, cid, "seed", 0).id
    with session_scope(session_factory) as s:
        first = jobs.claim(s, job_id, lease_s=60)
    assert first is not None and first.attempt == 1
    assert runner.run_job(runtime, job_id) == "skipped"  # the first worker is alive
    with session_scope(session_factory) as s:  # ... then its lease runs out (it died)
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert runner.run_job(runtime, job_id) == "succeeded"
    assert _job(session_factory, cid, "seed", 0).attempt == 2
    # the first worker wakes up and tries to write: its results are discarded
    assert (
        runner.commit(runtime, first, lambda s, c: pytest.fail("a stale attempt must not write"))
        == "superseded"
    )


def test_a_paused_campaign_stops_its_step_which_resumes_later(
    client, publisher, runtime, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    job_id = _job(session_factory, cid, "seed", 0).id
    with session_scope(session_factory) as s:
        claim = jobs.claim(s, job_id, lease_s=60)
    reporter = DbReporter(runtime, claim)
    reporter("ga", 0, 2)
    client.post(f"/campaigns/{cid}/pause")
    with pytest.raises(Cancelled):
        reporter("ga", 2, 2)  # a step's last report is never throttled
    runner.give_back(runtime, claim)
    assert _job(session_factory, cid, "seed", 0).status == "queued"
    publisher.sent.clear()
    assert client.post(f"/campaigns/{cid}/resume").json()["status"] == "seeding"
    drain(runtime, publisher)
    assert client.get(f"/campaigns/{cid}").json()["status"] == "completed"


def test_a_cancelled_campaign_stops_its_step_for_good(
    client, publisher, runtime, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    job_id = _job(session_factory, cid, "seed", 0).id
    with session_scope(session_factory) as s:
        claim = jobs.claim(s, job_id, lease_s=60)
    client.post(f"/campaigns/{cid}/cancel")
    with pytest.raises(Cancelled):
        DbReporter(runtime, claim)("ga", 0, 2)
    assert runner.commit(runtime, claim, lambda s, c: None) == "superseded"
    assert _job(session_factory, cid, "seed", 0).status == "cancelled"
    publisher.sent.clear()
    assert runner.run_job(runtime, job_id) == "skipped"
    assert client.get(f"/campaigns/{cid}").json()["status"] == "cancelled"


def test_recovery_resends_a_job_whose_worker_died(
    client, publisher, runtime, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    job_id = _job(session_factory, cid, "seed", 0).id
    with session_scope(session_factory) as s:
        jobs.claim(s, job_id, lease_s=60)
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                lease_until=utcnow() - timedelta(seconds=1),
                enqueued_at=utcnow() - timedelta(seconds=runtime.settings.lease_s + 1),
            )
        )
    publisher.sent.clear()
    runner.recover(runtime)
    assert (TaskName.SEED, (job_id,)) in publisher.sent
    drain(runtime, publisher)
    assert client.get(f"/campaigns/{cid}").json()["status"] == "completed"
    assert _job(session_factory, cid, "seed", 0).attempt == 2


def test_recovery_leaves_a_live_job_alone(client, publisher, runtime, session_factory) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    job_id = _job(session_factory, cid, "seed", 0).id
    with session_scope(session_factory) as s:
        jobs.claim(s, job_id, lease_s=60)
    publisher.sent.clear()
    runner.recover(runtime)
    assert all(ids != (job_id,) for _, ids in publisher.sent)


def test_a_crash_in_a_step_fails_the_campaign_with_the_reason(
    client, publisher, runtime, session_factory
) -> None:
    cid = client.post("/campaigns", json=ehrlich_campaign()).json()["id"]
    with session_scope(session_factory) as s:  # a stored spec the GA refuses (bypassing the API)
        campaign = s.get(Campaign, cid)
        spec = dict(campaign.spec)
        spec["oracle"] = {
            **spec["oracle"],
            "seeding": {**spec["oracle"]["seeding"], "mutation_prob": 1.5},
        }
        campaign.spec = spec
    drain(runtime, publisher)
    got = client.get(f"/campaigns/{cid}").json()
    assert got["status"] == "failed"
    assert "mutation_prob" in got["error"]
    assert _job(session_factory, cid, "seed", 0).status == "failed"


def test_seed_data_without_training_pairs_fails_the_campaign_in_plain_words(
    client, publisher, runtime
) -> None:
    # Four sequences, each far from the others: nothing within the distance threshold to learn.
    body = {
        "name": "distant library",
        "oracle": {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6},
        "optimizer": {"kind": "llome", "objective": "sft", "train": {"first_round_epochs": 1}},
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
        "batch_size": 8,
        "rounds": 1,
    }
    cid = client.post("/campaigns", json=body).json()["id"]
    seed = b"sequence,score\nAAAAAA,0.1\nCCCCCC,0.2\nDDDDDD,0.3\nEEEEEE,0.4\n"
    assert (
        client.post(
            f"/campaigns/{cid}/measurements", files={"file": ("s.csv", seed, "text/csv")}
        ).status_code
        == 201
    )
    assert publisher.names() == [TaskName.TRAIN]
    assert drain(runtime, publisher) == [(TaskName.TRAIN, "failed")]
    got = client.get(f"/campaigns/{cid}").json()
    assert got["status"] == "failed"
    assert got["error"].startswith("No training pairs") and "point mutants" in got["error"]
