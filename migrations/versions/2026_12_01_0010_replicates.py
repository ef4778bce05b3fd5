"""Replicates: a sequence may have several current measurements (its label is their mean); the
unique index on a sequence's current label becomes a plain index.

Revision ID: 0010_replicates
Revises: 0009_twin
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_replicates"
down_revision: str | None = "0009_twin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("uq_measurement_current_sequence", table_name="measurement")
    op.create_index(
        op.f("ix_measurement_sequence_id"), "measurement", ["sequence_id"], unique=False
    )


def downgrade() -> None:
    twice = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT COUNT(*) FROM (SELECT sequence_id FROM measurement WHERE superseded_at IS NULL "
                "GROUP BY sequence_id HAVING COUNT(*) > 1) AS r"
            )
        )
        .scalar()
    )
    if twice:
        raise RuntimeError(
            f"{twice} sequence(s) have replicates; the schema before 0010 holds "
            "one current label per sequence (nothing was changed)"
        )
    op.drop_index(op.f("ix_measurement_sequence_id"), table_name="measurement")
    op.create_index(
        "uq_measurement_current_sequence",
        "measurement",
        ["sequence_id"],
        unique=True,
        postgresql_where=sa.text("superseded_at IS NULL"),
        sqlite_where=sa.text("superseded_at IS NULL"),
    )
