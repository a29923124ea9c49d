"""Local features: each reference's keypoints for geometric verification.

One row per reference, written in the same transaction as the reference: the keypoints
do not depend on the ID2 models, so a model change re-embeds references but keeps these.
References stored before this revision have none and are verified as unverifiable
(the match decision then rests on the embedding alone).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_features",
        sa.Column("reference_id", sa.BigInteger, sa.ForeignKey("reference_images.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("local_features")
