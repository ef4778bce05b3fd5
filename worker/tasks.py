"""Thin task shells: names from ``api.services.jobs.TaskName``, ids as arguments, bodies in
``worker.steps``. Results are ignored (our rows hold them); transient database errors are
retried with backoff, a bounded number of times."""

from __future__ import annotations

from typing import Any

from api.services.jobs import TaskName
from worker import steps
from worker.steps import TRANSIENT_ERRORS


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
        steps.advance(self.app.llome_runtime, campaign_id)

    @app.task(name=TaskName.SEED.value, **common)
    def seed_campaign(self: Any, job_id: int) -> None:
        steps.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.TRAIN.value, **common)
    def train_round(self: Any, job_id: int) -> None:
        steps.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.GENERATE.value, **common)
    def generate_batch(self: Any, job_id: int) -> None:
        steps.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.LABEL.value, **common)
    def label_batch(self: Any, job_id: int) -> None:
        steps.run_job(self.app.llome_runtime, job_id)

    @app.task(name=TaskName.RECOVER.value, **common)
    def recover(self: Any) -> None:
        steps.recover(self.app.llome_runtime)
