"""``Idempotency-Key`` on creating POSTs: the same key with the same request returns the first
response again; the same key with another request is a 422; a key whose first request has not
finished is a 409 (its row is inserted first, so a concurrent twin waits on the unique index).

A route takes an :class:`IdempotentRequest` (``api.deps.IdempotencyDep``), calls ``begin`` with
its scope and what identifies the request, and returns ``finish(status, response)``."""

from __future__ import annotations

import hashlib
from typing import TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, LlomeError, StoredResponse
from api.models import IdempotencyKey

PENDING = -1  # status_code of a key whose first request is still running
MAX_KEY_LENGTH = 200

Response = TypeVar("Response", bound=BaseModel)


class KeyReused(LlomeError):
    status = 422
    title = "Idempotency-Key reused"


def fingerprint(*parts: bytes | str | None) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else (p or b"")
        h.update(len(b).to_bytes(8, "big") + b)
    return h.hexdigest()


class IdempotentRequest:
    """One request's ``Idempotency-Key`` (None: the client sent none, and nothing is recorded)."""

    def __init__(self, session: Session, key: str | None) -> None:
        self.session = session
        self.key = key or None
        self.row: IdempotencyKey | None = None

    def begin(self, scope: str, *request: bytes | str | None) -> None:
        """Record the key for ``scope`` and the request made of ``request``; raises
        :class:`StoredResponse` with the first response when this is a retry."""
        if self.key is None:
            return
        if len(self.key) > MAX_KEY_LENGTH:
            raise LlomeError(f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
        digest = fingerprint(*request)
        session, key = self.session, self.key
        row = session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        )
        if row is None:
            row = IdempotencyKey(
                scope=scope, key=key, request_sha256=digest, status_code=PENDING, response={}
            )
            try:
                with session.begin_nested():
                    session.add(row)
                    session.flush()
            except IntegrityError:
                raise Conflict(
                    f"a request with Idempotency-Key {key!r} is in progress; retry later"
                ) from None
            self.row = row
            return
        if row.request_sha256 != digest:
            raise KeyReused(
                f"Idempotency-Key {key!r} was used for a different request to {scope}; "
                "use a new key for a new request"
            )
        if row.status_code == PENDING:
            raise Conflict(f"a request with Idempotency-Key {key!r} is in progress; retry later")
        raise StoredResponse(row.status_code, row.response)

    def finish(self, status_code: int, response: Response) -> Response:
        """Keep ``response`` as the answer to every retry with this key; returns it."""
        if self.row is not None:
            self.row.status_code = status_code
            self.row.response = response.model_dump(mode="json")
        return response
