"""A change log of the embeddings table, written by triggers, for replicas' indexes.

Every insert and delete of an embedding row adds a row here in the same transaction,
with the writing transaction's id (``xid``). A server keeps its index current by reading
the changes of transactions that were not yet finished at its previous read (``xid >=``
that read's ``pg_snapshot_xmin``): the cost follows the changes, not the table, and a
transaction that commits late (an id lower than rows already read) is still seen.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_changes",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("xid", sa.BigInteger, nullable=False),
        sa.Column("embedding_id", sa.BigInteger, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("op", sa.String(1), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("op IN ('a', 'd')", name="ck_index_changes_op"),
    )
    op.create_index("ix_index_changes_xid", "index_changes", ["xid"])
    op.execute("""
        CREATE FUNCTION record_index_change() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO index_changes (xid, embedding_id, model_version, op)
                VALUES (pg_current_xact_id()::text::bigint, NEW.id, NEW.model_version, 'a');
                RETURN NEW;
            END IF;
            INSERT INTO index_changes (xid, embedding_id, model_version, op)
            VALUES (pg_current_xact_id()::text::bigint, OLD.id, OLD.model_version, 'd');
            RETURN OLD;
        END
        $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER embeddings_index_changes AFTER INSERT OR DELETE ON embeddings
        FOR EACH ROW EXECUTE FUNCTION record_index_change()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER embeddings_index_changes ON embeddings")
    op.execute("DROP FUNCTION record_index_change()")
    op.drop_table("index_changes")
