"""One webhook delivery attempt (the ``llome.deliver_notification`` task's body).

No transaction is open while the receiver is called: the row is read, the POST is made, then the
outcome is written under the row's lock (a duplicate task finds it delivered and does nothing).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
from sqlalchemy import select

from api.db import session_scope, utcnow
from api.models import Campaign, Notification, NotificationStatus
from api.services import notifications as service
from api.services.jobs import TaskName, enqueue_after_commit
from worker.runtime import Runtime

log = logging.getLogger("llome.notify")
TIMEOUT_S = 10.0  # a receiver that has not answered by then counts as a failed attempt
# A pending delivery this long past its due time lost its message (a broker restart, a worker
# that died holding the countdown): the recovery sweep sends it again.
OVERDUE_S = 120.0


def deliver(rt: Runtime, notification_id: int) -> float | None:
    """Make one attempt; returns the seconds until the next one, None when none is due."""
    with rt.session_factory() as session:
        note = session.get(Notification, notification_id)
        if note is None or note.status != NotificationStatus.PENDING:
            return None
        campaign = session.get(Campaign, note.campaign_id)
        secret = campaign.notify_secret if campaign is not None else None
        url, body = note.url, service.body_of(note, rt.settings)
        headers = service.headers_for(note, secret or "", body)
    allowed = secret is not None and service.host_allowed(url, rt.settings)
    ok, code, error = False, None, None
    if allowed:
        try:  # never follow a redirect: it could lead anywhere the allow list does not
            response = httpx.post(
                url, content=body, headers=headers, timeout=TIMEOUT_S, follow_redirects=False
            )
            code, ok = response.status_code, 200 <= response.status_code < 300
            if not ok:
                error = f"the receiver answered {code} {response.reason_phrase}".strip()
        except httpx.HTTPError as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
    with session_scope(rt.session_factory) as session:
        note = session.scalar(
            select(Notification).where(Notification.id == notification_id).with_for_update()
        )
        if note is None or note.status != NotificationStatus.PENDING:
            return None
        if not allowed:
            service.give_up(note, "the host is no longer in LLOME_NOTIFY_ALLOWED_HOSTS")
            return None
        delay = service.record_attempt(
            note, ok=ok, status_code=code, error=error, settings=rt.settings
        )
    if delay is not None:
        log.info(
            "notification %s (%s): attempt failed (%s); next in %.0f s",
            notification_id,
            url,
            error,
            delay,
        )
    return delay


def resend_overdue(rt: Runtime, *, everything: bool = False) -> int:
    """Send again the pending deliveries whose message is presumed lost (``everything``: all
    pending ones, after the in-memory broker restarted empty); returns how many."""
    cutoff = utcnow() - timedelta(seconds=OVERDUE_S)
    with session_scope(rt.session_factory) as session:
        q = select(Notification.id).where(Notification.status == NotificationStatus.PENDING)
        if not everything:
            q = q.where(Notification.next_attempt_at < cutoff)
        ids = list(session.scalars(q.order_by(Notification.id)))
        for nid in ids:
            enqueue_after_commit(session, TaskName.NOTIFY, nid)
    return len(ids)
