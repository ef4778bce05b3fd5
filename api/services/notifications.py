"""Webhooks: a campaign's events POSTed as signed JSON to its ``notify_url``.

An event becomes a ``notification`` row in the transaction that caused it (its ``key`` makes it
happen once per campaign) and a Celery task delivers it after the commit, so no request or step
waits on a lab's server. Failed attempts are retried with exponential backoff: at most
``MAX_ATTEMPTS`` tries, spread over about an hour. Hosts must be on the operator's
``LLOME_NOTIFY_ALLOWED_HOSTS`` (a URL elsewhere is a 422 at creation, and is checked again at
every attempt), so a campaign cannot make the server call into its own network.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.config import Settings
from api.db import utcnow
from api.errors import LlomeError
from api.models import Campaign, Notification, NotificationStatus
from api.schemas.campaigns import NOTIFY_EVENTS
from api.services import paging
from api.services.jobs import TaskName, enqueue_after_commit

MAX_ATTEMPTS = 8
# Waits after failed attempt 1..7, in units of notify_retry_base_s (30 s by default): 30 s, 1, 2,
# 4, 8, 16 and 32 min, about 63 min from the first try to the last.
BACKOFF_FACTORS = (1, 2, 4, 8, 16, 32, 64)
SIGNATURE_HEADER = "X-Llome-Signature"


class NotifyHostNotAllowed(LlomeError):
    status = 422
    title = "Notification URL not allowed"


class NotificationRead(BaseModel):
    id: int
    event: str = Field(description="batch_ready, labels_overdue, failed or completed")
    batch_id: int | None = None
    url: str
    status: str = Field(description="pending (another attempt is due), delivered or failed")
    attempts: int
    last_status_code: int | None = Field(None, description="the receiver's last HTTP status")
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None


def new_secret() -> str:
    return secrets.token_hex(32)


def host_allowed(url: str, settings: Settings) -> bool:
    """Whether ``url``'s host is on the allow list (``.example.org`` allows its subdomains)."""
    host = (urlsplit(url).hostname or "").lower()
    for allowed in settings.notify_hosts:
        if host == allowed or (allowed.startswith(".") and host.endswith(allowed)):
            return True
    return False


def check_url(url: str | None, settings: Settings) -> None:
    """A 422 naming the field when ``url``'s host is not allowed by the operator."""
    if url is None or host_allowed(url, settings):
        return
    hosts = ", ".join(sorted(settings.notify_hosts)) or "none (notifications are off)"
    raise NotifyHostNotAllowed(
        f"notify_url {url!r}: host {urlsplit(url).hostname!r} is not one the operator allows "
        f"(LLOME_NOTIFY_ALLOWED_HOSTS: {hosts})",
        errors=[{"field": "notify_url", "reason": "host not in LLOME_NOTIFY_ALLOWED_HOSTS"}],
    )


def emit(
    session: Session,
    campaign: Campaign,
    event: str,
    *,
    batch_id: int | None = None,
    key: str | None = None,
) -> Notification | None:
    """Record ``event`` for delivery after the commit, when the campaign asked for it; the
    same ``key`` (default: event and batch) a second time records nothing."""
    assert event in NOTIFY_EVENTS, event
    spec = campaign.spec or {}
    url, events = spec.get("notify_url"), spec.get("notify_events")
    if not url or (events is not None and event not in events):
        return None
    key = key or (f"{event}:{batch_id}" if batch_id is not None else event)
    if (
        session.scalar(
            select(Notification.id).where(
                Notification.campaign_id == campaign.id, Notification.key == key
            )
        )
        is not None
    ):
        return None
    path = f"/campaigns/{campaign.id}" + (f"/batches/{batch_id}" if batch_id is not None else "")
    payload = {
        "event": event,
        "campaign_id": campaign.id,
        "batch_id": batch_id,
        "at": utcnow().isoformat(),
        "path": path,
    }
    note = Notification(
        campaign_id=campaign.id,
        key=key,
        event=event,
        batch_id=batch_id,
        url=url,
        payload=payload,
        status=NotificationStatus.PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(note)
    session.flush()
    enqueue_after_commit(session, TaskName.NOTIFY, note.id)
    return note


def body_of(note: Notification, settings: Settings) -> bytes:
    """The bytes POSTed (and signed): event, campaign_id, batch_id when there is one, at and the
    resource's url."""
    p = note.payload
    out = {
        "event": p["event"],
        "campaign_id": p["campaign_id"],
        "batch_id": p["batch_id"],
        "at": p["at"],
        "url": settings.public_url.rstrip("/") + p["path"],
    }
    if out["batch_id"] is None:  # failed, completed: no batch
        del out["batch_id"]
    return json.dumps(out, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, the X-Llome-Signature header."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def record_attempt(
    note: Notification,
    *,
    ok: bool,
    status_code: int | None,
    error: str | None,
    settings: Settings,
    now: datetime | None = None,
) -> float | None:
    """Count one attempt; returns the seconds until the next one, or None when there is none
    (delivered, or the last attempt failed)."""
    now = now or utcnow()
    note.attempts += 1
    note.last_status_code, note.last_error = status_code, error
    if ok:
        note.status, note.delivered_at, note.next_attempt_at = (
            NotificationStatus.DELIVERED,
            now,
            None,
        )
        return None
    if note.attempts >= MAX_ATTEMPTS:
        note.status, note.next_attempt_at = NotificationStatus.FAILED, None
        return None
    delay = settings.notify_retry_base_s * BACKOFF_FACTORS[note.attempts - 1]
    note.next_attempt_at = now + timedelta(seconds=delay)
    return delay


def give_up(note: Notification, reason: str) -> None:
    note.status, note.last_error, note.next_attempt_at = NotificationStatus.FAILED, reason, None


def to_read(note: Notification) -> NotificationRead:
    return NotificationRead(
        id=note.id,
        event=note.event,
        batch_id=note.batch_id,
        url=note.url,
        status=note.status,
        attempts=note.attempts,
        last_status_code=note.last_status_code,
        last_error=note.last_error,
        next_attempt_at=note.next_attempt_at,
        created_at=note.created_at,
        delivered_at=note.delivered_at,
    )


def page(
    session: Session, campaign: Campaign, *, cursor: int | None, limit: int
) -> tuple[list[NotificationRead], int | None]:
    """Oldest first; the cursor is the last id seen."""
    rows, next_cursor = paging.keyset(
        session,
        select(Notification).where(Notification.campaign_id == campaign.id),
        Notification.id,
        cursor=cursor,
        limit=limit,
        newest_first=False,
    )
    return [to_read(n) for n in rows], next_cursor


def headers_for(note: Notification, secret: str, body: bytes) -> dict[str, Any]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        "X-Llome-Event": note.event,
        "X-Llome-Delivery": str(note.id),
        "User-Agent": "llome-notify",
    }
