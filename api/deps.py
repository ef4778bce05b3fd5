"""Dependencies: settings, one transaction per request, the lab of the API key (401 otherwise),
the lab's campaigns (404 otherwise, also for another lab's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.db import session_scope
from api.errors import Unauthorized
from api.models import Campaign, Lab
from api.ratelimit import RateLimiter
from api.services import campaigns as campaign_service
from api.services import labs as labs_service


# Dependencies that touch no database are async: a sync one costs a trip to the threadpool.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.
    Tasks queued with ``enqueue_after_commit`` are sent only after the commit."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response goes out, so a client that reads right after a
# 201 sees what it created.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
FactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


# The Swagger UI "Authorize" button: paste the key (without "Bearer ").
bearer = HTTPBearer(auto_error=False, scheme_name="APIKey",
                    description="an API key from `llome keys create --lab NAME` "
                                "(the embedded default writes its first key to .llome/api-key)")


def get_lab(request: Request, session: SessionDep,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Lab:
    """The lab whose key is in ``Authorization: Bearer <key>``; 401 otherwise."""
    if credentials is None:
        raise Unauthorized("this route needs an API key: send the header 'Authorization: Bearer <key>' "
                           "(create one with `llome keys create --lab NAME`)")
    found = labs_service.key_and_lab(session, credentials.credentials.strip())
    if found is None:
        raise Unauthorized("the API key is unknown or revoked")
    key, lab = found
    _limiter(request).check(key.id)
    request.state.api_key_id = key.id
    session.info[labs_service.PROVENANCE_KEY] = key.id  # stamped on what this request writes
    return lab


def _limiter(request: Request) -> RateLimiter:
    state = request.app.state
    if getattr(state, "rate_limiter", None) is None:
        settings: Settings = state.settings
        state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    return state.rate_limiter


LabDep = Annotated[Lab, Depends(get_lab)]


async def get_api_key_id(request: Request, lab: LabDep) -> int:
    """The id of the key that authenticated this request (for provenance)."""
    return request.state.api_key_id


ApiKeyIdDep = Annotated[int, Depends(get_api_key_id)]


def get_campaign(campaign_id: int, session: SessionDep, lab: LabDep) -> Campaign:
    """The lab's campaign; another lab's campaign is a 404, exactly like one that does not exist."""
    return campaign_service.get_or_404(session, campaign_id, lab_id=lab.id)


def get_campaign_locked(campaign_id: int, session: SessionDep, lab: LabDep) -> Campaign:
    """The campaign row locked for this transaction: writers of one campaign take turns."""
    return campaign_service.get_or_404(session, campaign_id, lock=True, lab_id=lab.id)


CampaignDep = Annotated[Campaign, Depends(get_campaign)]
LockedCampaignDep = Annotated[Campaign, Depends(get_campaign_locked)]
