"""Alembic migrations: the authority on the database schema.

Applied automatically when the service or a tool opens the store, or by hand
with ``origin-id db upgrade``. New revisions go in ``versions/``.
"""
