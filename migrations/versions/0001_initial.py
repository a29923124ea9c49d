"""Collections, reference images with labels, and their embeddings.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "reference_images",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("collection_id", sa.BigInteger, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("external_id", sa.Text, nullable=False, server_default=""),
        sa.Column("source_uri", sa.Text, nullable=False, server_default=""),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("labels", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("collection_id", "sha256", name="uq_reference_collection_sha256"),
    )
    op.create_index("uq_reference_collection_external_id", "reference_images",
                    ["collection_id", "external_id"], unique=True,
                    postgresql_where=sa.text("external_id <> ''"))
    op.create_table(
        "embeddings",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("reference_id", sa.BigInteger, sa.ForeignKey("reference_images.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("region", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("reference_id", "model_version", "region",
                            name="uq_embedding_reference_model_region"),
    )
    op.create_index("ix_embeddings_model_version_id", "embeddings", ["model_version", "id"])


def downgrade() -> None:
    op.drop_table("embeddings")
    op.drop_table("reference_images")
    op.drop_table("collections")
