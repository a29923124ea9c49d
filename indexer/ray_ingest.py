"""Bulk ingestion across machines on Ray Data: ``origin-id ingest --ray [ADDRESS]``.

The stages of the single-process pipeline (``origin_id.indexer.pipeline``) as Ray Data
operators, each a callable class that holds what it needs once:

* ``Prepare`` (CPU workers): read the bytes (local paths, or URLs through fsspec), hash
  them, skip what is already stored (same bytes, same collection, this model), decode
  within the limits, reduce to the 8-bit 256 px view the models read and find the
  image's keypoints (``origin_id.indexer.local_features``);
* ``Embed`` (an actor pool, one model per actor, ``num_gpus`` each where there are GPUs):
  the view's VAE latent times W, exactly as the service embeds;
* ``Write``: one transaction per batch into PostgreSQL, a savepoint per item, so an item
  that fails is that item's error and the batch commits.

It is resumable and idempotent as the single process is: a killed job run again skips,
by content hash, everything that was written, and nothing is written twice (the store's
uniqueness rules). A serving index picks the rows up through the change log. The driver
shows progress with rate and ETA and writes every failed item to a JSONL report.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from origin_id.indexer import local_features
from origin_id.indexer.config import Settings
from origin_id.indexer.decode import DecodeLimits, sha256_hex
from origin_id.indexer.errors import ImageError, InvalidRequest
from origin_id.indexer.pipeline import IngestItem, validate_metadata
from origin_id.indexer.sources import SourceRow
from origin_id.indexer.store import DEFAULT_COLLECTION, NewReference
from origin_id.models.vae import INPUT_SIZE, view_pixels

log = logging.getLogger(__name__)
BATCH = 16


@dataclass
class RaySummary:
    counts: dict[str, int] = field(default_factory=lambda: {"new": 0, "present": 0, "failed": 0})
    report: Path | None = None


def _rows(batch: dict) -> list[dict]:
    keys = list(batch)
    return [{k: batch[k][i] for k in keys} for i in range(len(batch[keys[0]]))] if keys else []


def _columns(rows: list[dict]) -> dict:
    out = {k: [r[k] for r in rows] for k in rows[0]}
    out["pixels"] = np.stack(out["pixels"])
    if "vector" in out:
        out["vector"] = np.stack(out["vector"])
    return {k: v if isinstance(v, np.ndarray) else np.asarray(v, dtype=object) for k, v in out.items()}


class Prepare:
    def __init__(self, database_url: str, model_version: str, limits: dict):
        from origin_id.indexer.store.postgres import PostgresStore

        self.store = PostgresStore.from_url(database_url)
        self.model_version, self.limits = model_version, DecodeLimits(**limits)

    def __call__(self, batch: dict) -> dict:
        rows = _rows(batch)
        blank = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        by_collection: dict[str, list[int]] = {}
        payloads: dict[int, bytes] = {}
        for i, row in enumerate(rows):
            row.update(status="pending", sha256="", width=0, height=0, reference_id=0, pixels=blank,
                       local_features=b"")
            source = SourceRow(row["location"], row["external_id"], row["collection"], row["source_uri"],
                               json.loads(row["labels"]), row["where"], row["error"])
            try:
                validate_metadata(IngestItem(read=source.read, collection=source.collection,
                                             external_id=source.external_id, source_uri=source.source_uri,
                                             labels=source.labels))
                payloads[i] = source.read()
            except (InvalidRequest, OSError) as exc:
                row.update(status="failed", error=str(exc)[:500])
                continue
            row["sha256"] = sha256_hex(payloads[i])
            by_collection.setdefault(row["collection"] or DEFAULT_COLLECTION, []).append(i)
        for collection, indices in by_collection.items():
            known = self.store.find_by_sha256(collection, [rows[i]["sha256"] for i in indices], self.model_version)
            for i in indices:
                if rows[i]["sha256"] in known:
                    rows[i].update(status="present", reference_id=known[rows[i]["sha256"]].id)
        for i, data in payloads.items():
            if rows[i]["status"] != "pending":
                continue
            try:
                decoded = self.limits.decode(data)
            except ImageError as exc:
                rows[i].update(status="failed", error=str(exc)[:500])
                continue
            rows[i].update(width=decoded.width, height=decoded.height, pixels=view_pixels([decoded.image])[0],
                           local_features=local_features.extract(decoded.image).encode())
        return _columns(rows)


class Embed:
    def __init__(self, settings: dict, threads: int):
        import torch

        from origin_id.indexer.embedder import Embedder
        from origin_id.indexer.model_bundle import ModelBundle

        torch.set_num_threads(max(1, threads))
        loaded = Settings.from_env({}, **settings, inpainting=False)
        self.embedder = Embedder(ModelBundle.load(loaded), layout=loaded.region_layout)

    def __call__(self, batch: dict) -> dict:
        from origin_id.models.vae import scale_view, to_tensor

        pending = np.flatnonzero(np.asarray(batch["status"]) == "pending")
        per_image = 1 + len(self.embedder.layout)
        vectors = np.zeros((len(batch["status"]), per_image, self.embedder.dim), np.float32)
        if len(pending):
            x = to_tensor(scale_view(np.asarray(batch["pixels"])[pending]))
            vectors[pending] = self.embedder.reference_vectors_of(x)
        batch["vector"] = vectors
        return batch


class Write:
    def __init__(self, database_url: str, model_version: str):
        from origin_id.indexer.store.postgres import PostgresStore

        self.store = PostgresStore.from_url(database_url)
        self.model_version = model_version

    def __call__(self, batch: dict) -> dict:
        rows = _rows(batch)
        pending = [r for r in rows if r["status"] == "pending"]
        new = [NewReference(collection=r["collection"] or DEFAULT_COLLECTION, sha256=r["sha256"],
                            width=int(r["width"]), height=int(r["height"]), vectors=np.asarray(r["vector"]),
                            external_id=r["external_id"], source_uri=r["source_uri"], labels=json.loads(r["labels"]),
                            local_features=bytes(r["local_features"]))
               for r in pending]
        for row, result in zip(pending, self.store.write(new, self.model_version) if new else []):
            if result.error:
                row.update(status="failed", error=result.error)
            else:
                row.update(status="new" if result.created else "present", reference_id=result.reference.id)
        return {k: np.asarray([r[k] for r in rows], dtype=object)
                for k in ("location", "external_id", "collection", "where", "status", "error", "reference_id")}


def run_on_ray(settings: Settings, database_url: str, model_version: str, rows: Iterable[SourceRow], total: int,
               address: str = "", workers: int = 0, report: Path | None = None,
               on_row: Callable[[dict], None] | None = None) -> RaySummary:
    """Ingest ``rows`` on a Ray cluster (``address``; empty = a local one for this job) with
    ``workers`` embedding actors (0 = one per CPU, or per GPU where there are GPUs);
    ``on_row`` sees each finished row (benchmarks time them)."""
    import ray
    from tqdm import tqdm

    # A Ray started here is stopped here: a driver left attached to a cluster that someone
    # later stops is killed with it (Ray ends drivers whose raylet dies).
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = workers or max(1, gpus or cpus)
    threads = max(1, cpus // workers) if not gpus else 1
    prepare_actors = max(1, min(workers, cpus))
    # The embedding actors take what the light decode and write actors (0.25 CPU each) leave,
    # so that every actor of the plan can be placed at once (otherwise Ray waits forever).
    embed_cpus = max(0.1, (cpus - 0.25 * (prepare_actors + 1)) / workers) if not gpus else 1
    items = [{**asdict(r), "labels": json.dumps(r.labels)} for r in rows]
    limits = {"max_pixels": settings.max_pixels, "max_side": settings.max_side,
              "max_whole_pixels": settings.max_whole_pixels}
    model_settings = {k: getattr(settings, k) for k in ("vae", "transform", "device") if getattr(settings, k)}
    # One block per batch: a single block would reach one actor only, and commit at the end.
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // BATCH)))
    ds = ds.map_batches(Prepare, fn_constructor_kwargs={"database_url": database_url, "model_version": model_version,
                                                        "limits": limits},
                        batch_size=BATCH, concurrency=prepare_actors, num_cpus=0.25, batch_format="numpy")
    ds = ds.map_batches(Embed, fn_constructor_kwargs={"settings": model_settings, "threads": threads},
                        batch_size=BATCH, concurrency=workers, num_cpus=embed_cpus, num_gpus=1 if gpus else 0,
                        batch_format="numpy")
    ds = ds.map_batches(Write, fn_constructor_kwargs={"database_url": database_url, "model_version": model_version},
                        batch_size=BATCH, concurrency=1, num_cpus=0.25, batch_format="numpy")
    summary = RaySummary(report=report)
    out = open(report, "w") if report else None  # noqa: SIM115 (closed below)
    try:
        with tqdm(total=total, desc="ingest (ray)", unit="img", dynamic_ncols=True) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for row in _rows(batch):
                    summary.counts[row["status"] if row["status"] in summary.counts else "failed"] += 1
                    if row["status"] == "failed" and out is not None:
                        out.write(json.dumps({"location": row["location"], "where": row["where"],
                                              "external_id": row["external_id"], "error": row["error"]}) + "\n")
                    bar.update(1)
                    if on_row is not None:
                        on_row(row)
                bar.set_postfix(summary.counts)
    finally:
        if out is not None:
            out.close()
        if started_here:
            ray.shutdown()
    return summary
