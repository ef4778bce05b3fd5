"""Bulk SQL for large uploads: lookups by many keys and inserts without an ORM object per row,
in the caller's transaction. Postgres gets one bound array per lookup and COPY for inserts (a
100k-row upload stays a few seconds); other backends get chunked ``IN`` lists and executemany.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Integer, Text, any_, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from api.db import utcnow
from api.models import Sequence as SequenceRow

CHUNK = 5000  # ids per IN (...) list: under every backend's bound-parameter limit

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def joinable(texts: Iterable[str]) -> bool:
    # Sequences never hold a comma (alphabets may not): sent as one comma-joined string, which
    # the driver passes as is, where it would quote and escape a text array item by item.
    return all("," not in t for t in texts)


def among(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN values``; on Postgres as ``= ANY(array)``: one bound parameter instead of
    thousands (the driver parses a 5000-placeholder statement slowly, every time)."""
    if is_postgres(session):
        if isinstance(column.type, Text) and joinable(values):
            joined = bindparam(None, ",".join(values), type_=Text())
            return column == any_(func.string_to_array(joined, ","))
        item = Text() if isinstance(column.type, Text) else Integer()
        return column == any_(bindparam(None, list(values), type_=ARRAY(item)))
    return column.in_(values)


def existing_sequences(
    session: Session, campaign_id: int, texts: list[str]
) -> dict[str, SequenceRow]:
    """The campaign's stored sequences among ``texts``, by text."""
    found: dict[str, SequenceRow] = {}
    # A campaign's seed file meets an empty table: one tiny query instead of a lookup per row.
    if (
        not texts
        or session.scalar(
            select(SequenceRow.id).where(SequenceRow.campaign_id == campaign_id).limit(1)
        )
        is None
    ):
        return found
    for part in chunks(texts):
        for seq in session.scalars(
            select(SequenceRow).where(
                SequenceRow.campaign_id == campaign_id, among(session, SequenceRow.text, part)
            )
        ):
            found[seq.text] = seq
    return found


def insert_sequences(session: Session, campaign_id: int, texts: list[str]) -> dict[str, int]:
    """Insert ``texts``, sequences new to the campaign, and return their ids by text. The caller
    found them new under the campaign lock it still holds."""
    if is_postgres(session):
        # One statement per chunk, the texts as one parameter. A plain INSERT: ON CONFLICT's
        # speculative insertion costs a second index probe per row, and the lock rules out
        # a conflict (a unique violation would roll everything back).
        into = (
            "INSERT INTO sequence (campaign_id, text, created_at) "
            "SELECT :campaign_id, t, :now FROM unnest({}) AS t RETURNING id, text"
        )
        as_joined = text(into.format("string_to_array(:texts, ',')"))
        as_array = text(into.format("CAST(:texts AS TEXT[])"))
        now = utcnow()
        ids: dict[str, int] = {}
        for part in chunks(list(dict.fromkeys(texts)), 50_000):
            one_string = joinable(part)
            rows = session.execute(
                as_joined if one_string else as_array,
                {
                    "campaign_id": campaign_id,
                    "now": now,
                    "texts": ",".join(part) if one_string else list(part),
                },
            )
            ids.update((t, sid) for sid, t in rows.tuples())
        return ids
    ids = {t: s.id for t, s in existing_sequences(session, campaign_id, texts).items()}
    new = [t for t in dict.fromkeys(texts) if t not in ids]
    stmt = insert(SequenceRow).returning(
        SequenceRow.id, SequenceRow.text, sort_by_parameter_order=True
    )
    for part in chunks(new):
        rows = session.execute(stmt, [{"campaign_id": campaign_id, "text": t} for t in part])
        ids.update((t, sid) for sid, t in rows.tuples())
    return ids


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_cell(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # int; float as its shortest exact repr


def insert_rows(
    session: Session,
    table: Any,
    common: dict[str, Any],
    rows: list[tuple[Any, ...]],
    columns: list[str],
) -> None:
    """Insert plain rows (no ids back): ``common`` holds the values every row shares, ``rows``
    the values of ``columns``. COPY on Postgres, a Core executemany per chunk elsewhere."""
    if not rows:
        return
    if is_postgres(session):
        names = ", ".join([*common, *columns])
        shared = "".join(copy_cell(v) + "\t" for v in common.values())
        cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            # COPY's text format written in blocks: a third of the time of write_row per row.
            for part in chunks(rows, 10_000):
                copy.write(
                    "".join(shared + "\t".join([copy_cell(v) for v in row]) + "\n" for row in part)
                )
        return
    for part in chunks(rows):
        session.execute(insert(table), [{**common, **dict(zip(columns, row))} for row in part])
