"""SQLAlchemy table definitions, mirroring the Alembic migrations.

The migrations are the authority on the schema (the database is created by
``alembic upgrade``); these definitions are what queries are written against,
and ``tests/test_store.py`` checks the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

collections = Table(
    "collections",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

references = Table(
    "reference_images",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("collection_id", BigInteger, ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("external_id", Text, nullable=False, server_default=""),
    Column("source_uri", Text, nullable=False, server_default=""),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("labels", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("collection_id", "sha256", name="uq_reference_collection_sha256"),
    Index("uq_reference_collection_external_id", "collection_id", "external_id", unique=True,
          postgresql_where=text("external_id <> ''")),
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("reference_id", BigInteger, ForeignKey("reference_images.id", ondelete="CASCADE"), nullable=False),
    Column("model_version", Text, nullable=False),
    # 0 = the whole image; further regions of the same reference are extra vectors.
    Column("region", SmallInteger, nullable=False, server_default="0"),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float16 (older rows float32), little-endian: vector_codec
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("reference_id", "model_version", "region", name="uq_embedding_reference_model_region"),
    Index("ix_embeddings_model_version_id", "model_version", "id"),
)

#: Each reference's keypoints (``origin_id.indexer.local_features``), model-independent.
local_features = Table(
    "local_features",
    metadata,
    Column("reference_id", BigInteger, ForeignKey("reference_images.id", ondelete="CASCADE"), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("name", Text, nullable=False, server_default=""),
    Column("key_sha256", String(64), nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("collection", Text, nullable=True),
    Column("rate_limit", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("role IN ('read', 'write', 'admin')", name="ck_api_keys_role"),
)

#: Written by a trigger on ``embeddings`` (migration 0003), read by ``PostgresStore.changes_since``.
index_changes = Table(
    "index_changes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("xid", BigInteger, nullable=False),
    Column("embedding_id", BigInteger, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("op", String(1), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("op IN ('a', 'd')", name="ck_index_changes_op"),
    Index("ix_index_changes_xid", "xid"),
)
