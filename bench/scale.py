"""Scale: a server over 100k and 1M references, as the index sees them.

    python -m bench.scale --references 100000 1000000

References are written through the project's own schema (PostgreSQL COPY into the same
tables, the change-log trigger on) with vectors drawn like real ones: real ID2 embeddings
of allowed photo tiles and procedural scenes, and synthetic vectors from a Gaussian fitted
to them (mean and covariance), L2-normalised; one reference sits alone in a collection of
its own. Queries are the real embeddings of *edited copies* of real references, so recall
is measured on near-duplicates of real embeddings, not on synthetic clusters.

For each size, against ``origin-id serve`` on a fresh embedded PostgreSQL: cold start (the
index built from PostgreSQL) and warm start (loaded from its files), server memory, a
full query over gRPC (p50 / p99), a query filtered to the one-reference collection, add
and delete, how long another process's 1,000 writes take to appear; in process, on the
saved index: search alone (a query's three views), recall@1 against exact search, and the
slowest search while the index checkpoints. Writes ``bench/results/scale.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
from PIL import Image
from sqlalchemy import text
from tqdm import tqdm

from bench.load import free_port, rss_mib
from bench.service import machine
from origin_id.indexer.config import Settings
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.query_views import query_batch
from origin_id.indexer.store import vector_codec
from origin_id.indexer.store.embedded import EmbeddedPostgres
from origin_id.indexer.store.feed import IndexFeed
from origin_id.indexer.store.migrate import upgrade
from origin_id.indexer.store.postgres import PostgresStore
from origin_id.indexer.vector_index import VectorIndex
from origin_id.server.client import OriginClient
from training.data import allowed_photos, photo_tiles, procedural_image
from training.edits import apply

MIB = 2**20
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(".data/bench/scale")


def jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def real_images(n: int) -> list[Image.Image]:
    tiles = [t for photo in allowed_photos() for t in photo_tiles(photo)]
    return (tiles + [procedural_image(3_000_000 + i, size=320) for i in range(max(0, n - len(tiles)))])[:n]


def real_embeddings(n: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings of n real images, of edited copies of the first ``queries`` of them, the
    copies' views for the service's search), cached."""
    path = CACHE / f"real-{n}-{queries}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["refs"], f["queries"], f["views"]
    bundle = ModelBundle.load(Settings.from_env({}, inpainting=False))
    embedder = Embedder(bundle)
    images = real_images(n)
    refs = np.concatenate([embedder.embed(images[i:i + 64]) for i in
                           tqdm(range(0, n, 64), desc="real embeddings", unit="x64")])
    families = ["tone", "crop_resize", "overlay", "noise_recompress", "restyle", "palette"]
    views, firsts = [], []
    for i in tqdm(range(queries), desc="edited copies", unit="img"):
        edited = Image.open(io.BytesIO(jpeg(apply(families[i % len(families)], images[i], seed=i)))).convert("RGB")
        v = embedder.project(embedder.encode(query_batch(edited)))
        views.append(v[:3] if len(v) >= 3 else np.pad(v, ((0, 3 - len(v)), (0, 0))))
        firsts.append(v[0])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, refs=refs, queries=np.stack(firsts), views=np.stack(views))
    return refs, np.stack(firsts), np.stack(views)


def gallery(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: the real ones, then draws from a Gaussian fitted to them."""
    rng = np.random.default_rng(seed)
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(cov)))
    out = [real]
    for start in range(len(real), n, 100_000):
        m = min(100_000, n - start)
        x = (mean + rng.standard_normal((m, len(mean))) @ chol.T).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return np.concatenate(out)[:n]


def write_references(url: str, vectors: np.ndarray, model_version: str) -> None:
    """COPY into the service's tables: collection "bench" for all but the last vector, which
    is the one reference of collection "lone"."""
    u = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(u) as conn:
        bench = conn.execute("INSERT INTO collections (name) VALUES ('bench') RETURNING id").fetchone()[0]
        lone = conn.execute("INSERT INTO collections (name) VALUES ('lone') RETURNING id").fetchone()[0]
        with conn.cursor().copy("COPY reference_images (id, collection_id, external_id, sha256, width, height) "
                                "FROM STDIN") as copy:
            for i in range(len(vectors)):
                copy.write_row((i + 1, lone if i == len(vectors) - 1 else bench, f"r{i}", f"{i:064x}", 256, 256))
        with conn.cursor().copy("COPY embeddings (id, reference_id, model_version, region, dim, vector) "
                                "FROM STDIN") as copy:
            for i in tqdm(range(len(vectors)), desc="COPY embeddings", unit="row", mininterval=5):
                copy.write_row((i + 1, i + 1, model_version, 0, vectors.shape[1],
                                vector_codec.encode(vectors[i])))
        for table in ("reference_images", "embeddings"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {len(vectors)})")


class Served:
    def __init__(self, data_dir: Path, database_url: str):
        self.port = free_port()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "origin_id.server.cli", "serve", "--data-dir", str(data_dir), "--port",
             str(self.port), "--database-url", database_url, "--index-sync-interval-s", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"})
        self.client = OriginClient(f"127.0.0.1:{self.port}", timeout=120)
        self.client.wait_until_serving(timeout=1800)
        self.start_s = time.monotonic() - started

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)


def measure(n: int, refs: np.ndarray, queries: np.ndarray, views: np.ndarray, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="origin-id-scale-"))
    work.chmod(0o755)
    pg = EmbeddedPostgres(work / "pg")
    url = pg.start()
    store = PostgresStore.from_url(url)
    upgrade(store.engine)
    version = ModelBundle.load(Settings.from_env({}, inpainting=False)).version
    vectors = gallery(refs, n)
    write_references(url, vectors, version)
    out: dict = {"references": n}
    with store.engine.connect() as conn:
        out["embeddings_table_mib"] = conn.execute(text(
            "SELECT pg_total_relation_size('embeddings')")).scalar_one() / MIB
        out["database_mib"] = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one() / MIB
    served = Served(work / "data", url)
    out["cold_start_s"] = served.start_s
    out["rss_mib_after_cold_start"] = rss_mib(served.proc.pid)
    out.update(served_figures(served, store, version, refs, url))
    served.stop()
    served = Served(work / "data", url)
    out["warm_start_s"] = served.start_s
    out["rss_mib"] = rss_mib(served.proc.pid)
    served.stop()
    out.update(in_process_figures(work / "data" / "index" / version, store, version, vectors, queries, views))
    store.close()
    pg.stop(force=True)
    return out


def served_figures(served: Served, store: PostgresStore, version: str, refs: np.ndarray, url: str) -> dict:
    client, out = served.client, {}
    images = real_images(200)
    times = []
    for im in images[:100]:
        data = jpeg(apply("tone", im, seed=1))
        start = time.monotonic()
        client.identify(data, top_k=10)
        times.append(time.monotonic() - start)
    out["query_p50_ms"], out["query_p99_ms"] = float(np.median(times) * 1000), float(np.percentile(times, 99) * 1000)
    start = time.monotonic()
    lone = client.identify(jpeg(images[0]), top_k=3, collection="lone")
    out["lone_collection_query_ms"] = (time.monotonic() - start) * 1000
    out["lone_collection_answer"] = [c.reference.external_id for c in lone.candidates]
    adds, deletes = [], []
    for im in images[100:120]:
        start = time.monotonic()
        ref = client.add(jpeg(apply("film", im, seed=2)), collection="added").reference
        adds.append(time.monotonic() - start)
        start = time.monotonic()
        client.delete(ref.id)
        deletes.append(time.monotonic() - start)
    out["add_p50_ms"], out["delete_p50_ms"] = float(np.median(adds) * 1000), float(np.median(deletes) * 1000)
    before = client.stats().indexed_vectors
    other = PostgresStore.from_url(url)  # another process writes 1,000 rows
    from origin_id.indexer.store import NewReference
    rng = np.random.default_rng(5)
    extra = refs[rng.integers(0, len(refs), 1000)] + 0.01 * rng.standard_normal((1000, refs.shape[1]))
    items = [NewReference(collection="other", sha256=f"other-{i:058d}", width=1, height=1,
                          vectors=(v / np.linalg.norm(v))[None].astype(np.float32)) for i, v in enumerate(extra)]
    other.write(items, version)
    other.close()
    start = time.monotonic()
    while client.stats().indexed_vectors < before + 1000 and time.monotonic() - start < 60:
        time.sleep(0.05)
    out["other_process_1000_writes_found_s"] = time.monotonic() - start
    out["index_type"] = client.stats().index_type
    out["index_recall_at_1_reported"] = client.stats().index_recall_at_1
    return out


def in_process_figures(folder: Path, store: PostgresStore, version: str, vectors: np.ndarray,
                       queries: np.ndarray, views: np.ndarray) -> dict:
    index = VectorIndex(vectors.shape[1], use_gpu="off")
    started = time.monotonic()
    index.load(folder, IndexFeed(store), version, max_age_s=86_400)
    out = {"index_load_s": time.monotonic() - started}
    times = []
    for v in views:
        start = time.perf_counter()
        index.search(v, 40)
        times.append(time.perf_counter() - start)
    out["search_p50_ms"], out["search_p99_ms"] = float(np.median(times) * 1000), float(np.percentile(times, 99) * 1000)
    best, top = np.full(len(queries), -np.inf, np.float32), np.zeros(len(queries), np.int64)
    for s in range(0, len(vectors), 200_000):  # exact search, a block at a time
        scores = queries @ vectors[s:s + 200_000].T
        j = scores.argmax(1)
        value = scores[np.arange(len(j)), j]
        better = value > best
        best[better], top[better] = value[better], j[better] + s
    exact_top = top + 1  # embedding ids start at 1
    _, found = index.search(queries, 5)
    first = [next((i for i in row if 0 < i <= len(vectors)), -1) for row in found]
    out["recall_at_1_index_alone"] = float((np.array(first) == exact_top).mean())
    # As served: the index's 40 candidates scored exactly, the best of them the answer's top-1.
    _, candidates = index.search(queries, 40)
    known = (candidates > 0) & (candidates <= len(vectors))  # not the rows the service itself added
    rescored = np.einsum("qd,qkd->qk", queries, vectors[np.where(known, candidates, 1) - 1])
    rescored[~known] = -np.inf
    served_top = candidates[np.arange(len(queries)), rescored.argmax(1)]
    out["recall_at_1"] = float((served_top == exact_top).mean())
    slowest, stop = [0.0], threading.Event()

    def searching() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            index.search(views[0], 40)
            slowest[0] = max(slowest[0], time.perf_counter() - start)
    thread = threading.Thread(target=searching, daemon=True)
    thread.start()
    time.sleep(1.0)
    out["slowest_search_alone_ms"] = slowest[0] * 1000
    index.add(np.array([10**9]), vectors[:1], np.array([1]))
    slowest[0] = 0.0
    started = time.monotonic()
    index.save(folder.parent / "checkpoint-bench")  # the usual checkpoint: recent changes
    out["checkpoint_s"] = time.monotonic() - started
    out["slowest_search_during_checkpoint_ms"] = slowest[0] * 1000
    index._base_saved = False  # the checkpoint after a rebuild: the base written too
    slowest[0] = 0.0
    started = time.monotonic()
    index.save(folder.parent / "checkpoint-bench")
    out["base_checkpoint_s"] = time.monotonic() - started
    out["slowest_search_during_base_checkpoint_ms"] = slowest[0] * 1000
    stop.set()
    thread.join()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--references", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--real", type=int, default=3000, help="real images embedded (the rest are drawn like them)")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    refs, queries, views = real_embeddings(args.real, args.queries)
    rows = [measure(n, refs, queries, views, args) for n in args.references]
    report(rows, args)


def report(rows: list[dict], args) -> None:
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows,
              "command": "python -m bench.scale " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    fields = [("index", lambda r: r["index_type"].split(" (")[0].removeprefix("faiss-cpu ")),
              ("cold start", lambda r: f"{r['cold_start_s']:.1f} s"),
              ("warm start", lambda r: f"{r['warm_start_s']:.1f} s"),
              ("PostgreSQL: embeddings table / whole database",
               lambda r: f"{r['embeddings_table_mib']:.0f} / {r['database_mib']:.0f} MiB"),
              ("server RSS", lambda r: f"{r['rss_mib']:.0f} MiB"),
              ("search alone p50 / p99", lambda r: f"{r['search_p50_ms']:.1f} / {r['search_p99_ms']:.1f} ms"),
              ("recall@1 vs exact, as served (40 candidates scored exactly)", lambda r: f"{r['recall_at_1']:.3f}"),
              ("recall@1 vs exact, the index alone (k = 1)", lambda r: f"{r['recall_at_1_index_alone']:.3f}"),
              ("full query p50 / p99", lambda r: f"{r['query_p50_ms']:.0f} / {r['query_p99_ms']:.0f} ms"),
              ("query of a one-reference collection", lambda r: f"{r['lone_collection_query_ms']:.0f} ms, "
                                                                 f"{r['lone_collection_answer']}"),
              ("add / delete p50", lambda r: f"{r['add_p50_ms']:.0f} / {r['delete_p50_ms']:.0f} ms"),
              ("another process's 1,000 writes found", lambda r: f"{r['other_process_1000_writes_found_s']:.1f} s"),
              ("slowest search over 1 s, no checkpoint", lambda r: f"{r['slowest_search_alone_ms']:.0f} ms"),
              ("checkpoint of recent changes; slowest search meanwhile",
               lambda r: f"{r['checkpoint_s']:.2f} s; {r['slowest_search_during_checkpoint_ms']:.0f} ms"),
              ("checkpoint with the base (after a rebuild); slowest search meanwhile",
               lambda r: f"{r['base_checkpoint_s']:.1f} s; {r['slowest_search_during_base_checkpoint_ms']:.0f} ms"),
              ("server RSS right after a cold start", lambda r: f"{r['rss_mib_after_cold_start']:.0f} MiB")]
    lines = ["| | " + " | ".join(f"{r['references']:,}" for r in rows) + " |",
             "|---|" + "---:|" * len(rows)]
    lines += [f"| {name} | " + " | ".join(fn(r) for r in rows) + " |" for name, fn in fields]
    lines += ["", f"Machine: {result['machine']}. Date: {result['date']}. Command: `{result['command']}`."]
    (args.out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
