"""Keyset pagination, the one way every list in the API pages: rows in id order, a page of
``limit`` rows after the cursor (the last id the previous page showed), and the next cursor only
when there is more. Ids never repeat, so a page never skips or repeats a row that was added
meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session


def _id(row: Any) -> int:
    return int(row.id)


def keyset(
    session: Session,
    query: Select[*tuple[Any, ...]],
    key: Any,
    *,
    cursor: int | None,
    limit: int,
    newest_first: bool,
    key_of: Callable[[Any], int] = _id,
) -> tuple[list[Any], int | None]:
    """One page of ``query`` ordered by the id column ``key``; returns its rows (entities when
    the query selects one, else tuples) and the next cursor (None: the last page). ``key_of``
    reads a row's id (default: ``row.id``)."""
    if cursor is not None:
        query = query.where(key < cursor if newest_first else key > cursor)
    query = query.order_by(key.desc() if newest_first else key).limit(limit + 1)
    if len(query.column_descriptions) == 1:
        rows: list[Any] = list(session.scalars(query))
    else:
        rows = list(session.execute(query).tuples())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (key_of(rows[-1]) if more and rows else None)
