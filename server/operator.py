"""``origin-id db`` and ``origin-id keys``: an operator's commands on the database itself.

They ask no server: they open the store (the embedded cluster under ``--data-dir``, or
``DATABASE_URL``) as the service does, do their work, and close it.
"""

from __future__ import annotations

import argparse
import sys

from origin_id.indexer.config import Settings


class UsageError(Exception):
    """A command that cannot run as given (exit status 2)."""


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from origin_id.indexer.origin_index import open_store
    from origin_id.indexer.store.migrate import current_revision, head_revision

    store, embedded = open_store(settings)  # opening migrates to head
    try:
        print(f"database at revision {current_revision(store.engine)} (head {head_revision()})")
    finally:
        store.close()
        if embedded:
            embedded.stop()
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """API keys, on the database itself (an operator's command: no server is asked)."""
    from origin_id.indexer.origin_index import open_store
    from origin_id.indexer.store.keys import ApiKeyStore

    store, embedded = open_store(settings)
    try:
        keys = ApiKeyStore(store)
        if args.action == "create":
            if (args.collection is None) == (not args.all_collections):
                raise UsageError("give --collection NAME, or --all-collections for a key of every collection")
            record, key = keys.create(args.role, args.collection, name=args.name, rate_limit=args.rate_limit)
            print(key)
            print(f"key {record.id} ({record.role} on {record.collection or 'every collection'}): shown once, "
                  f"store it now; clients send it as 'authorization: Bearer KEY' (ORIGIN_ID_API_KEY)",
                  file=sys.stderr)
        elif args.action == "list":
            print(f"{'id':>5}  {'name':<20} {'role':<6} {'collection':<20} {'rate/s':>7}  created              revoked")
            for k in keys.list():
                print(f"{k.id:>5}  {k.name[:20]:<20} {k.role:<6} {(k.collection or '*')[:20]:<20} "
                      f"{k.rate_limit or '-':>7}  {k.created_at:%Y-%m-%d %H:%M:%S}  "
                      f"{f'{k.revoked_at:%Y-%m-%d %H:%M:%S}' if k.revoked_at else '-'}")
        else:
            if args.id is None:
                raise UsageError("give the id of the key to revoke (origin-id keys list)")
            record = keys.revoke(args.id)
            print(f"revoked key {record.id} ({record.role} on {record.collection or 'every collection'})")
    finally:
        store.close()
        if embedded:
            embedded.stop()
    return 0
