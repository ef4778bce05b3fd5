"""/campaigns/{id}/notifications: the campaign's webhook deliveries."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CampaignDep, SessionDep
from api.routes import Cursor, Limit, parse_cursor
from api.schemas.common import PROBLEM_RESPONSES, Page
from api.services import notifications as service
from api.services.notifications import NotificationRead

router = APIRouter(prefix="/campaigns", tags=["notifications"], responses=PROBLEM_RESPONSES)


@router.get("/{campaign_id}/notifications", response_model=Page[NotificationRead])
def list_notifications(
    campaign: CampaignDep, session: SessionDep, cursor: Cursor = None, limit: Limit = 100
) -> Page[NotificationRead]:
    """Every webhook delivery, oldest first: event, status (pending, delivered, failed),
    attempts, the receiver's last HTTP status and the last error."""
    items, next_cursor = service.page(session, campaign, cursor=parse_cursor(cursor), limit=limit)
    return Page[NotificationRead](
        items=items, next_cursor=str(next_cursor) if next_cursor else None
    )
