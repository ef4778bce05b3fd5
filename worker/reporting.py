"""Progress from llome_core into job rows, the lease heartbeat, and cooperative cancellation."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Self

from sqlalchemy import select

from api.db import session_scope
from api.models import Campaign, CampaignStatus
from api.services import jobs
from llome_core.progress import Cancelled
from worker.runtime import Runtime

log = logging.getLogger("llome.worker")

STOP_STATUSES = (CampaignStatus.PAUSED, CampaignStatus.CANCELLED, CampaignStatus.FAILED)


class DbReporter:
    """``reporter(phase, step, total)``: writes progress to the job row at most every
    ``progress_interval_s`` (and on every phase change and at the end), and raises
    :class:`Cancelled` when the campaign was paused or cancelled, the claim was lost, or the
    process is shutting down."""

    def __init__(self, rt: Runtime, claim: jobs.Claim, heartbeat: Heartbeat | None = None) -> None:
        self.rt = rt
        self.claim = claim
        self.heartbeat = heartbeat
        self._phase: str | None = None
        self._last = 0.0

    def __call__(self, phase: str, step: int, total: int) -> None:
        if self.rt.stopping.is_set():
            raise Cancelled("the worker is shutting down")
        if self.heartbeat is not None and self.heartbeat.lost:
            raise Cancelled("another worker took over this job")
        now = time.monotonic()
        changed = phase != self._phase
        if not changed and step < total and now - self._last < self.rt.settings.progress_interval_s:
            return
        self._phase, self._last = phase, now
        with session_scope(self.rt.session_factory) as session:
            ok = jobs.report_progress(
                session, self.claim, phase, step, total, changed, self.rt.settings.lease_s
            )
            status = session.scalar(
                select(Campaign.status).where(Campaign.id == self.claim.campaign_id)
            )
        if not ok:
            raise Cancelled("another worker took over this job")
        if status in STOP_STATUSES:
            raise Cancelled(f"the campaign was {status}")


class Heartbeat:
    """Renews the job's lease every ``lease_s / 3`` from a thread while a step computes, so a
    long stretch without progress reports does not look like a dead worker."""

    def __init__(self, rt: Runtime, claim: jobs.Claim) -> None:
        self.rt = rt
        self.claim = claim
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{claim.job_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = max(0.2, self.rt.settings.lease_s / 3)
        while not self._stop.wait(interval):
            try:
                with session_scope(self.rt.session_factory) as session:
                    if not jobs.renew_lease(session, self.claim, self.rt.settings.lease_s):
                        self.lost = True
                        return
            except Exception:  # a DB hiccup: the next beat tries again
                log.warning("lease renewal for job %s failed", self.claim.job_id, exc_info=True)
