"""Synthetic twins: an Ehrlich campaign names the wet-lab campaign it mirrors.

Revision ID: 0009_twin
Revises: 0008_upload_target
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_twin"
down_revision: str | None = "0008_upload_target"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("twin_of_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_campaign_twin_of_id"), ["twin_of_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_campaign_twin_of_id_campaign"),
            "campaign",
            ["twin_of_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_campaign_twin_of_id_campaign"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_campaign_twin_of_id"))
        batch_op.drop_column("twin_of_id")
