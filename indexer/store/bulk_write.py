"""Writing a batch of references with COPY: a few statements per batch instead of several
per item. ``PostgresStore.write`` uses it for batches and falls back to item-by-item writes
when the database refuses a value (one bad value fails a whole COPY)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from origin_id.indexer.store import DEFAULT_COLLECTION, NewReference, vector_codec


@dataclass(frozen=True)
class CopiedItem:
    """What became of one item: its reference (None: its external_id names another image),
    whether this item created it, and the (embedding id, region) rows it wrote."""

    reference_id: int | None
    created: bool
    embeddings: tuple[tuple[int, int], ...]


def write_copied(conn, items: Sequence[NewReference], collection_ids: dict[str, int],
                 model_version: str) -> list[CopiedItem]:
    """Within ``conn``'s transaction: COPY the items into a temporary table, insert what is
    new (``ON CONFLICT DO NOTHING`` skips images already stored and external ids already
    taken), find every item's reference by content hash, then COPY the vectors the new or
    re-embedded references lack, and the keypoints of those that have none yet. Outcomes
    match writing the items one by one: of two items with the same image, the first is the
    one that created it or gave it its vectors."""
    cur = conn.connection.driver_connection.cursor()
    cur.execute("CREATE TEMP TABLE incoming_refs (pos int, collection_id bigint, external_id text, "
                "source_uri text, sha256 text, width int, height int, labels jsonb) ON COMMIT DROP")
    with cur.copy("COPY incoming_refs FROM STDIN") as copy:
        for pos, item in enumerate(items):
            copy.write_row((pos, collection_ids[item.collection or DEFAULT_COLLECTION], item.external_id,
                            item.source_uri, item.sha256, item.width, item.height, json.dumps(item.labels)))
    cur.execute("INSERT INTO reference_images (collection_id, external_id, source_uri, sha256, width, height, "
                "labels) SELECT collection_id, external_id, source_uri, sha256, width, height, labels "
                "FROM incoming_refs ORDER BY pos ON CONFLICT DO NOTHING RETURNING id")
    created_ids = {row[0] for row in cur.fetchall()}
    cur.execute("SELECT i.pos, r.id FROM incoming_refs i JOIN reference_images r "
                "ON r.collection_id = i.collection_id AND r.sha256 = i.sha256")
    reference_of = dict(cur.fetchall())
    first_pos: dict[int, int] = {}
    for pos in sorted(reference_of):
        first_pos.setdefault(reference_of[pos], pos)
    cur.execute("CREATE TEMP TABLE incoming_vectors (reference_id bigint, region smallint, dim int, "
                "vector bytea) ON COMMIT DROP")
    with cur.copy("COPY incoming_vectors FROM STDIN") as copy:
        for ref_id, pos in first_pos.items():
            for region, vec in enumerate(items[pos].vectors):
                copy.write_row((ref_id, region, int(vec.shape[0]), vector_codec.encode(vec)))
    # DO NOTHING: vectors of this model already stored (a re-add), or written concurrently.
    cur.execute("INSERT INTO embeddings (reference_id, model_version, region, dim, vector) "
                "SELECT reference_id, %s, region, dim, vector FROM incoming_vectors "
                "ORDER BY reference_id, region ON CONFLICT DO NOTHING RETURNING id, reference_id, region",
                (model_version,))
    written: dict[int, list[tuple[int, int]]] = {}
    for eid, ref_id, region in cur.fetchall():
        written.setdefault(ref_id, []).append((eid, region))
    # Keypoints of the items that carry them, by the same first item per reference.
    cur.execute("CREATE TEMP TABLE incoming_features (reference_id bigint, data bytea) ON COMMIT DROP")
    with cur.copy("COPY incoming_features FROM STDIN") as copy:
        for ref_id, pos in first_pos.items():
            if items[pos].local_features:
                copy.write_row((ref_id, items[pos].local_features))
    cur.execute("INSERT INTO local_features (reference_id, data) SELECT reference_id, data FROM incoming_features "
                "ORDER BY reference_id ON CONFLICT DO NOTHING")
    outcomes = []
    for pos in range(len(items)):
        ref_id = reference_of.get(pos)
        first = ref_id is not None and first_pos[ref_id] == pos
        outcomes.append(CopiedItem(ref_id, first and ref_id in created_ids,
                                   tuple(sorted(written.get(ref_id, ()), key=lambda w: w[1])) if first else ()))
    return outcomes
