"""Access and integrity (issue 5): labs, API keys, measurement corrections.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


CURRENT = sa.text("superseded_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "lab",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lab")),
        sa.UniqueConstraint("name", name=op.f("uq_lab_name")),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lab_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["lab_id"], ["lab.id"], name=op.f("fk_api_key_lab_id_lab"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
    )
    op.create_index(op.f("ix_api_key_lab_id"), "api_key", ["lab_id"], unique=False)
    # Existing campaigns keep lab_id null until the first lab is created (it adopts them).
    with op.batch_alter_table("campaign") as batch_op:
        batch_op.add_column(sa.Column("lab_id", sa.Integer(), nullable=True))
        batch_op.create_index(op.f("ix_campaign_lab_id"), ["lab_id"], unique=False)
        batch_op.create_foreign_key(
            op.f("fk_campaign_lab_id_lab"), "lab", ["lab_id"], ["id"], ondelete="RESTRICT"
        )
    with op.batch_alter_table("upload") as batch_op:
        batch_op.add_column(sa.Column("api_key_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_upload_api_key_id_api_key"),
            "api_key",
            ["api_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("measurement") as batch_op:
        batch_op.add_column(sa.Column("supersedes_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("api_key_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_measurement_supersedes_id_measurement"),
            "measurement",
            ["supersedes_id"],
            ["id"],
        )
        batch_op.create_unique_constraint(op.f("uq_measurement_supersedes_id"), ["supersedes_id"])
        batch_op.create_foreign_key(
            op.f("fk_measurement_api_key_id_api_key"),
            "api_key",
            ["api_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.drop_constraint("uq_measurement_sequence_id", type_="unique")
        batch_op.drop_constraint("uq_measurement_candidate_id", type_="unique")
    # Partial unique indexes: one current label per sequence and per candidate.
    op.create_index(
        "uq_measurement_current_sequence",
        "measurement",
        ["sequence_id"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )
    op.create_index(
        "uq_measurement_current_candidate",
        "measurement",
        ["candidate_id"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )


def downgrade() -> None:
    # Corrections cannot fit the old one-label-per-sequence schema: keep the current labels only.
    op.execute("UPDATE measurement SET supersedes_id = NULL")
    op.execute("DELETE FROM measurement WHERE superseded_at IS NOT NULL")
    op.drop_index("uq_measurement_current_candidate", table_name="measurement")
    op.drop_index("uq_measurement_current_sequence", table_name="measurement")
    with op.batch_alter_table("measurement") as batch_op:
        batch_op.drop_constraint(op.f("fk_measurement_api_key_id_api_key"), type_="foreignkey")
        batch_op.drop_constraint(op.f("uq_measurement_supersedes_id"), type_="unique")
        batch_op.drop_constraint(
            op.f("fk_measurement_supersedes_id_measurement"), type_="foreignkey"
        )
        batch_op.drop_column("note")
        batch_op.drop_column("api_key_id")
        batch_op.drop_column("superseded_at")
        batch_op.drop_column("supersedes_id")
        batch_op.create_unique_constraint("uq_measurement_sequence_id", ["sequence_id"])
        batch_op.create_unique_constraint("uq_measurement_candidate_id", ["candidate_id"])
    with op.batch_alter_table("upload") as batch_op:
        batch_op.drop_constraint(op.f("fk_upload_api_key_id_api_key"), type_="foreignkey")
        batch_op.drop_column("api_key_id")
    with op.batch_alter_table("campaign") as batch_op:
        batch_op.drop_constraint(op.f("fk_campaign_lab_id_lab"), type_="foreignkey")
        batch_op.drop_index(op.f("ix_campaign_lab_id"))
        batch_op.drop_column("lab_id")
    op.drop_index(op.f("ix_api_key_lab_id"), table_name="api_key")
    op.drop_table("api_key")
    op.drop_table("lab")
