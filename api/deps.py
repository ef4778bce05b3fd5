"""Dependencies: settings, one transaction per request, campaigns that exist (404 otherwise)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.models import Campaign
from api.services import campaigns as campaign_service


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.
    Tasks queued with ``enqueue_after_commit`` are sent only after the commit."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response goes out, so a client that reads right after a
# 201 sees what it created.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
FactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


def get_campaign(campaign_id: int, session: SessionDep) -> Campaign:
    return campaign_service.get_or_404(session, campaign_id)


def get_campaign_locked(campaign_id: int, session: SessionDep) -> Campaign:
    """The campaign row locked for this transaction: writers of one campaign take turns."""
    return campaign_service.get_or_404(session, campaign_id, lock=True)


CampaignDep = Annotated[Campaign, Depends(get_campaign)]
LockedCampaignDep = Annotated[Campaign, Depends(get_campaign_locked)]
