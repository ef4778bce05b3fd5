"""Labels: one foreign key to (campaign, sequence); an uploaded label's key is its upload's.

A label's campaign must be its sequence's campaign, checked once per row instead of two checks
that did not tie them together. Rows stored before keep their own key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sequence") as b:
        b.create_unique_constraint(op.f("uq_sequence_campaign_id_id"), ["campaign_id", "id"])
    with op.batch_alter_table("measurement") as b:
        b.drop_constraint(op.f("fk_measurement_campaign_id_campaign"), type_="foreignkey")
        b.drop_constraint(op.f("fk_measurement_sequence_id_sequence"), type_="foreignkey")
        b.create_foreign_key(
            op.f("fk_measurement_campaign_id_sequence"),
            "sequence",
            ["campaign_id", "sequence_id"],
            ["campaign_id", "id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("measurement") as b:
        b.drop_constraint(op.f("fk_measurement_campaign_id_sequence"), type_="foreignkey")
        b.create_foreign_key(
            op.f("fk_measurement_sequence_id_sequence"),
            "sequence",
            ["sequence_id"],
            ["id"],
            ondelete="CASCADE",
        )
        b.create_foreign_key(
            op.f("fk_measurement_campaign_id_campaign"),
            "campaign",
            ["campaign_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("sequence") as b:
        b.drop_constraint(op.f("uq_sequence_campaign_id_id"), type_="unique")
