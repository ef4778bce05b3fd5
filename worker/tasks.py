"""Thin task shells: names from ``api.services.jobs.TaskName``, ids as arguments, bodies in
``worker.runner``. Results are ignored (our rows hold them); transient database errors are
retried with backoff, a bounded number of times."""

from __future__ import annotations

from typing import Any

from api.services.jobs import TaskName
from api.services.notifications import MAX_ATTEMPTS
from worker import notify, runner
from worker.runner import TRANSIENT_ERRORS


def register_tasks(app: Any) -> None:
    """Register the llome tasks on ``app``; they find their Runtime at ``app.llome_runtime``."""
    settings = app.llome_runtime.settings
    common: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "ignore_result": True,
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": True,
        "retry_backoff_max": 60,
        "max_retries": settings.transient_retries,
    }

    @app.task(name=TaskName.ADVANCE.value, **common)
    def advance_campaign(self: Any, campaign_id: int) -> None:
        runner.advance(self.app.llome_runtime, campaign_id)

    @app.task(name=TaskName.SEED.value, **common)
    def seed_campaign(self: Any, job_id: int) -> None:
        runner.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.TRAIN.value, **common)
    def train_round(self: Any, job_id: int) -> None:
        runner.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.GENERATE.value, **common)
    def generate_batch(self: Any, job_id: int) -> None:
        runner.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.LABEL.value, **common)
    def label_batch(self: Any, job_id: int) -> None:
        runner.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.RECOVER.value, **common)
    def recover(self: Any) -> None:
        runner.recover(self.app.llome_runtime)

    @app.task(name=TaskName.NOTIFY.value, **common)
    def deliver_notification(self: Any, notification_id: int) -> None:
        # The row counts the attempts and says when to stop; Celery only holds the wait.
        delay = notify.deliver(self.app.llome_runtime, notification_id)
        if delay is not None:
            raise self.retry(countdown=delay, max_retries=MAX_ATTEMPTS + settings.transient_retries)
