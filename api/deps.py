"""Dependencies: settings, one transaction per request, the lab of the API key (401 otherwise),
the lab's campaigns (404 otherwise, also for another lab's). Every route but /health and the
docs depends on :func:`get_lab` or on a campaign dependency; both check the key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.config import Settings
from api.db import end_transaction
from api.errors import CampaignNotFound, Unauthorized
from api.models import Campaign, Lab
from api.ratelimit import RateLimiter, limiter_of
from api.services import labs as labs_service
from api.services.idempotency import IdempotentRequest


# Dependencies that touch no database are async: a sync one costs a trip to the threadpool.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


READ_METHODS = frozenset({"GET", "HEAD"})


def _factory(request: Request) -> sessionmaker[Session]:
    """Reads get read-only sessions (on SQLite they never take the write lock)."""
    state = request.app.state
    return state.read_session_factory if request.method in READ_METHODS else state.session_factory


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    return _factory(request)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.
    Tasks queued with ``enqueue_after_commit`` are sent only after the commit. Opening a session
    touches no database (its connection is taken at the first query), so only the end goes to
    the threadpool."""
    session = _factory(request)()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(partial(end_transaction, session, succeeded=False))
        raise
    await run_in_threadpool(partial(end_transaction, session, succeeded=True))


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit before the response goes out, so a client that reads right after a
# 201 sees what it created.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
FactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


# The Swagger UI "Authorize" button: paste the key (without "Bearer ").
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="an API key from `llome keys create --lab NAME` "
    "(the embedded default writes its first key to .llome/api-key)",
)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _unauthorized(request: Request, message: str) -> Unauthorized:
    """A 401, counted against the client's address (a 429 once it floods)."""
    _limiter(request).failed(request)
    return Unauthorized(message)


def _presented_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise _unauthorized(
            request,
            "this route needs an API key: send the header 'Authorization: "
            "Bearer <key>' (create one with `llome keys create --lab NAME`)",
        )
    return credentials.credentials.strip()


def _accept(request: Request, key_id: int) -> None:
    """A request with a live key: its rate limit, and the key named for the routes that record
    who wrote what (``request.state.api_key_id``)."""
    _limiter(request).check(key_id)
    request.state.api_key_id = key_id


def get_lab(request: Request, session: SessionDep, credentials: Credentials) -> Lab:
    """The lab whose key is in ``Authorization: Bearer <key>``; 401 otherwise."""
    found = labs_service.key_and_lab(session, _presented_key(request, credentials))
    if found is None:
        raise _unauthorized(request, "the API key is unknown or revoked")
    key, lab = found
    _accept(request, key.id)
    return lab


def _limiter(request: Request) -> RateLimiter:
    return limiter_of(request.app.state)


LabDep = Annotated[Lab, Depends(get_lab)]


def _campaign(
    request: Request,
    session: Session,
    campaign_id: int,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    lock: bool,
) -> Campaign:
    # Key and campaign in one query (polling clients ask this many times a second); only a miss
    # asks again, to tell a bad key (401) from another lab's or a missing campaign (404, alike).
    key = _presented_key(request, credentials)
    found = labs_service.campaign_for_key(session, campaign_id, key, lock=lock)
    if found is None:
        owner = labs_service.key_and_lab(session, key)
        if owner is None:
            raise _unauthorized(request, "the API key is unknown or revoked")
        _limiter(request).check(owner[0].id)  # guessing ids costs the key's rate too
        raise CampaignNotFound(campaign_id)
    campaign, key_id = found
    _accept(request, key_id)
    return campaign


def get_campaign(
    campaign_id: int, request: Request, session: SessionDep, credentials: Credentials
) -> Campaign:
    """The campaign, if the key's lab owns it; another lab's campaign is a 404, exactly like one
    that does not exist; a bad key is a 401."""
    return _campaign(request, session, campaign_id, credentials, lock=False)


def get_campaign_locked(
    campaign_id: int, request: Request, session: SessionDep, credentials: Credentials
) -> Campaign:
    """The campaign row locked for this transaction: writers of one campaign take turns."""
    return _campaign(request, session, campaign_id, credentials, lock=True)


CampaignDep = Annotated[Campaign, Depends(get_campaign)]
LockedCampaignDep = Annotated[Campaign, Depends(get_campaign_locked)]


def get_idempotency(
    session: SessionDep,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="a retry with the same key and request returns the "
            "first response; the same key with another request is a 422",
        ),
    ] = None,
) -> IdempotentRequest:
    """The creating POSTs' ``Idempotency-Key``: a retry gets the first response again."""
    return IdempotentRequest(session, key)


IdempotencyDep = Annotated[IdempotentRequest, Depends(get_idempotency)]
