"""Alembic environment: the caller (``origin_id.indexer.store.migrate``) hands over a connection.

Migrations are written by hand and import nothing from the service (the store depends on
them, not the other way round); ``tests/indexer/test_store.py`` checks that the head
revision matches the store's table definitions.
"""

from alembic import context

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise SystemExit("migrations run through `origin-id db upgrade` (or on start), which passes a connection")
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `origin-id db upgrade`")
run_migrations_online()
