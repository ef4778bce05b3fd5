"""Uploads are told apart by (campaign, target, file hash): the same bytes sent as seed data and
then as a batch's results are two uploads, not the first one's report again.

Revision ID: 0008_upload_target
Revises: 0007_lifecycle
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_upload_target"
down_revision: str | None = "0007_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("upload") as b:
        b.add_column(sa.Column("target", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE upload SET target = CASE WHEN batch_id IS NULL THEN 'seed' "
        "ELSE 'batch ' || CAST(batch_id AS VARCHAR(20)) END"
    )
    with op.batch_alter_table("upload") as b:
        b.alter_column("target", existing_type=sa.String(length=32), nullable=False)
        b.drop_constraint(op.f("uq_upload_campaign_id_sha256"), type_="unique")
        b.create_unique_constraint(
            op.f("uq_upload_campaign_id_target_sha256"), ["campaign_id", "target", "sha256"]
        )


def downgrade() -> None:
    twice = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT COUNT(*) FROM (SELECT campaign_id, sha256 FROM upload GROUP BY campaign_id, sha256 "
                "HAVING COUNT(*) > 1) AS d"
            )
        )
        .scalar()
    )
    if twice:
        raise RuntimeError(
            f"{twice} file(s) were uploaded to two targets of one campaign; the "
            "schema before 0008 cannot hold that (nothing was changed)"
        )
    with op.batch_alter_table("upload") as b:
        b.drop_constraint(op.f("uq_upload_campaign_id_target_sha256"), type_="unique")
        b.create_unique_constraint(op.f("uq_upload_campaign_id_sha256"), ["campaign_id", "sha256"])
        b.drop_column("target")
