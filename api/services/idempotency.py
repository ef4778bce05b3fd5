"""``Idempotency-Key`` on creating POSTs: the same key with the same request returns the first
response again; the same key with another request is a 422; a key whose first request has not
finished is a 409 (its row is inserted first, so a concurrent twin waits on the unique index)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, LlomeError
from api.models import IdempotencyKey

PENDING = -1  # status_code of a key whose first request is still running


class KeyReused(LlomeError):
    status = 422
    title = "Idempotency-Key reused"


def fingerprint(*parts: bytes | str | None) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else (p or b"")
        h.update(len(b).to_bytes(8, "big") + b)
    return h.hexdigest()


def begin(session: Session, scope: str, key: str | None, request_sha256: str) -> IdempotencyKey | tuple[int, dict[str, Any]] | None:
    """None without a key; the stored (status, body) for a replay; else the new pending row,
    to be finished with ``finish`` once the response is known."""
    if not key:
        return None
    if len(key) > 200:
        raise LlomeError("Idempotency-Key is longer than 200 characters")
    row = session.scalar(select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key))
    if row is None:
        row = IdempotencyKey(scope=scope, key=key, request_sha256=request_sha256, status_code=PENDING,
                             response={})
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            raise Conflict(f"a request with Idempotency-Key {key!r} is in progress; retry later") from None
        return row
    if row.request_sha256 != request_sha256:
        raise KeyReused(f"Idempotency-Key {key!r} was used for a different request to {scope}; "
                        "use a new key for a new request")
    if row.status_code == PENDING:
        raise Conflict(f"a request with Idempotency-Key {key!r} is in progress; retry later")
    return row.status_code, row.response


def finish(row: IdempotencyKey | None, status_code: int, body: dict[str, Any]) -> None:
    if row is not None:
        row.status_code = status_code
        row.response = body
