"""Jobs: task names and queues, enqueue-after-commit, claiming with a lease, recovery.

The API never imports the worker: it sends tasks by their stable names through a publisher.
A job row is the unit of work; a Celery message only says "look at job 17". Claiming is one
conditional UPDATE, so a duplicate delivery (redelivery after a crash, a recovery re-send) finds
the job taken or done and does nothing; ``attempt`` fences the result write of a stale worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from api.config import Settings
from api.db import after_commit, utcnow
from api.models import Job, JobStatus, JobStep

log = logging.getLogger("llome.jobs")


class TaskName(StrEnum):
    ADVANCE = "llome.advance_campaign"
    SEED = "llome.seed_campaign"
    TRAIN = "llome.train_round"
    GENERATE = "llome.generate_batch"
    LABEL = "llome.label_batch"
    RECOVER = "llome.recover"
    NOTIFY = "llome.deliver_notification"


class Queue(StrEnum):
    GPU = "gpu"
    CPU = "cpu"


QUEUE_OF: dict[TaskName, Queue] = {
    TaskName.ADVANCE: Queue.CPU,
    TaskName.SEED: Queue.CPU,
    TaskName.TRAIN: Queue.GPU,
    TaskName.GENERATE: Queue.GPU,
    TaskName.LABEL: Queue.CPU,
    TaskName.RECOVER: Queue.CPU,
    TaskName.NOTIFY: Queue.CPU,
}
TASK_OF_STEP: dict[str, TaskName] = {
    JobStep.SEED: TaskName.SEED,
    JobStep.TRAIN: TaskName.TRAIN,
    JobStep.GENERATE: TaskName.GENERATE,
    JobStep.LABEL: TaskName.LABEL,
}

Publisher = Callable[..., None]  # publisher(task_name, *ids)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration shared by the API's producer and every worker."""
    return {
        "broker_url": settings.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,  # progress and results live in our rows
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": Queue.CPU.value,
        "task_routes": {name.value: {"queue": QUEUE_OF[name].value} for name in TaskName},
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def make_celery(settings: Settings) -> Any:
    """A Celery app configured from ``settings`` with no tasks registered (enough to send)."""
    from celery import Celery

    app = Celery("llome", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class CeleryPublisher:
    """Sends ``task(*ids)`` to its queue by name."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, task: str, *ids: int) -> None:
        name = TaskName(task)
        self.app.send_task(name.value, args=list(ids), queue=QUEUE_OF[name].value)


def enqueue_after_commit(session: Session, task: TaskName, *ids: int) -> None:
    """Send ``task(*ids)`` once this session commits; a rollback drops it. A failed send is
    logged, not raised: the rows are committed and the recovery sweep sends it again."""
    publisher = session.info.get("publisher")
    if publisher is None:
        raise RuntimeError(
            "this session has no publisher: build it with make_sessionmaker(engine, publisher)"
        )

    def _send() -> None:
        try:
            publisher(task, *ids)
        except Exception:
            log.exception("could not send %s%s; the recovery sweep will retry", task, ids)

    after_commit(session, _send)


def get_job(session: Session, campaign_id: int, round_: int, step: JobStep) -> Job | None:
    return session.scalar(
        select(Job).where(Job.campaign_id == campaign_id, Job.round == round_, Job.step == step)
    )


def create_job(session: Session, campaign_id: int, round_: int, step: JobStep) -> Job:
    """The job for (campaign, round, step), created and enqueued if it does not exist yet.
    Callers hold the campaign row lock, so two creators cannot race."""
    job = get_job(session, campaign_id, round_, step)
    if job is None:
        job = Job(campaign_id=campaign_id, round=round_, step=step, status=JobStatus.QUEUED)
        session.add(job)
        session.flush()
        send_job(session, job)
    return job


def send_job(session: Session, job: Job) -> None:
    job.enqueued_at = utcnow()
    enqueue_after_commit(session, TASK_OF_STEP[job.step], job.id)


def needs_resend(job: Job, now: datetime, settings: Settings) -> bool:
    """True when a job's message is presumed lost: queued and not picked up for longer than the
    broker's visibility timeout, or running under a lease that ran out (its worker died)."""
    last = job.enqueued_at or job.created_at
    if job.status == JobStatus.QUEUED:
        return last < now - timedelta(seconds=settings.visibility_timeout_s)
    if job.status == JobStatus.RUNNING:
        expired = job.lease_until is None or job.lease_until < now
        return expired and last < now - timedelta(seconds=settings.lease_s)
    return False


@dataclass(frozen=True)
class Claim:
    job_id: int
    campaign_id: int
    round: int
    step: str
    attempt: int


def claim(session: Session, job_id: int, lease_s: float) -> Claim | None:
    """Take the job if it is queued, or running under an expired lease; None if it is done,
    cancelled or held by a live worker. One conditional UPDATE: safe under any concurrency."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == JobStatus.QUEUED,
                (Job.status == JobStatus.RUNNING) & (Job.lease_until < now),
            ),
        )
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            lease_until=now + timedelta(seconds=lease_s),
            started_at=now,
            error=None,
            updated_at=now,
        )
        .returning(Job.campaign_id, Job.round, Job.step, Job.attempt)
    ).one_or_none()
    if row is None:
        return None
    return Claim(job_id, row.campaign_id, row.round, row.step, row.attempt)


def owned(session: Session, c: Claim, *, lock: bool = False) -> Job | None:
    """The job row if ``c`` still owns it (running, same attempt), else None."""
    q = select(Job).where(
        Job.id == c.job_id, Job.status == JobStatus.RUNNING, Job.attempt == c.attempt
    )
    if lock:
        q = q.with_for_update()
    return session.scalar(q)


def renew_lease(session: Session, c: Claim, lease_s: float) -> bool:
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == c.job_id, Job.status == JobStatus.RUNNING, Job.attempt == c.attempt)
        .values(lease_until=now + timedelta(seconds=lease_s))
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult


def release(session: Session, c: Claim) -> None:
    """Give the job back (paused, or a transient error): queued again, same attempt count."""
    session.execute(
        update(Job)
        .where(Job.id == c.job_id, Job.status == JobStatus.RUNNING, Job.attempt == c.attempt)
        .values(status=JobStatus.QUEUED, lease_until=None, updated_at=utcnow())
    )


def report_progress(
    session: Session,
    c: Claim,
    phase: str,
    step: int,
    total: int,
    phase_changed: bool,
    lease_s: float,
) -> bool:
    """Write progress (and renew the lease); False if the claim was lost."""
    now = utcnow()
    values: dict[str, Any] = {
        "phase": phase,
        "progress_step": step,
        "progress_total": total,
        "lease_until": now + timedelta(seconds=lease_s),
        "updated_at": now,
    }
    if phase_changed:
        values["phase_started_at"] = now
    res = session.execute(
        update(Job)
        .where(Job.id == c.job_id, Job.status == JobStatus.RUNNING, Job.attempt == c.attempt)
        .values(**values)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
