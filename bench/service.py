"""Service benchmark: ingest rate and query latency at N references.

    python -m bench.service --references 10000 [--queries 300]

1. generates N distinct reference images (JPEG, 384 px: procedural scenes and
   tiles of the allowed photos) under ``.data/bench/refs`` (cached);
2. ingests them into a fresh embedded PostgreSQL through the real pipeline
   (decode -> embed -> write -> index), timing images/s;
3. serves that index over gRPC on loopback and sends edited copies of random
   references one at a time, timing each IdentifyOrigin call end to end; then
   some of them again upscaled to 4000 x 3000 (12 MP, what phones send), with
   and without inpainting analysis, since decoding, resizing and the full-size
   mask grow with the query. Each query is sent once per configuration, back
   to back: what the inpainting verdict adds is measured per query;
4. prints a table and writes ``bench/results/service.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from origin_id.indexer.config import Settings
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.origin_index import OriginIndex
from origin_id.indexer.sources import iter_sources
from origin_id.server.app import OriginServer
from origin_id.server.client import OriginClient
from training.data import procedural_image
from training.edits import apply, jpeg_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def make_references(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"ref-{i:06d}.jpg" for i in range(n)]
    todo = [p for p in paths if not p.exists()]
    for path in tqdm(todo, desc="generate references", unit="img", dynamic_ncols=True):
        procedural_image(1_000_000 + int(path.stem[4:]), size=384).save(path, quality=90)
    return paths


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def conv_throughput(device: torch.device | str = "cpu", repeats: int = 40) -> float:
    """GFLOP/s of one fixed convolution on ``device`` now: a 3x3, 48 -> 48 channels over two
    64 x 64 maps, channels-last float32 (a layer of the inpainting localizer's finest level).

    The yardstick for latency figures. A shared host's speed moves by hours (the same models
    measured 295 and 435 ms added per query on one 2-core EPYC, 80 minutes apart), and a
    benchmark that prints its host's throughput beside its timings lets a reader tell a
    slow spell from a slower model. The median over ``repeats`` runs after a warm-up. The
    2-core EPYC of the benchmark tables measured 193 (its peak: 2 cores x 32 float32 FLOP
    a cycle at 3 GHz) in an hour when the inpainting models added 283 ms to a query."""
    device = torch.device(device)
    conv = torch.nn.Conv2d(48, 48, 3, padding=1).to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(2, 48, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * x.shape[0] * 48 * 48 * 9 * 64 * 64
    times = []
    with torch.inference_mode():
        for i in range(repeats + 5):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            conv(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 5:
                times.append(time.perf_counter() - start)
    return flops / sorted(times)[len(times) // 2] / 1e9


#: Query configurations timed on the same index: (settings overrides, query set); the
#: first is the service's default.
CONFIGS = {
    "default: flip + trim + inpainting": ({}, "edited"),
    "flip + trim, no inpainting": ({"inpainting": False}, "edited"),
    "plain embedding only": ({"inpainting": False, "query_flip": False, "query_trim": False}, "edited"),
    "default, 12 MP queries": ({}, "large"),
    "no inpainting, 12 MP queries": ({"inpainting": False}, "large"),
}
#: Configurations compared query by query: the one with inpainting -> the same without.
PAIRS = {"default: flip + trim + inpainting": "flip + trim, no inpainting",
         "default, 12 MP queries": "no inpainting, 12 MP queries"}
LARGE_SIZE = (4000, 3000)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--references", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--work-dir", type=Path, default=Path(".data/bench"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--large-queries", type=int, default=60, help="of the queries, sent again at 12 MP")
    args = p.parse_args(argv)

    refs = make_references(args.work_dir / "refs", args.references)
    data_dir = args.work_dir / "service"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o755)
    settings = Settings.from_env(data_dir=data_dir, port=0, batch_size=args.batch_size)
    origin = OriginIndex.open(settings)
    try:
        # Model throughput alone (decode excluded), for the >= 15 images/s target.
        sample = [Image.open(refs[i]).convert("RGB") for i in range(64)]
        embedder = Embedder(origin.bundle, args.batch_size)
        embedder.embed(sample[:8])
        t0 = time.perf_counter()
        embedder.embed(sample)
        embed_rate = len(sample) / (time.perf_counter() - t0)

        items = list(iter_sources([args.work_dir / "refs"], collection="bench"))[: args.references]
        t0 = time.perf_counter()
        failed = 0
        for outcome in tqdm(origin.pipeline.run(items), total=len(items), desc="ingest", unit="img",
                            dynamic_ncols=True):
            failed += outcome.error is not None
        ingest_s = time.perf_counter() - t0
        # What a server's first maintenance round does after such an ingest (the keypoint
        # index outgrew its exact kind, the vectors' delta its share): timed apart, so the
        # queries below measure the index a server settles on, not the minute before it.
        t0 = time.perf_counter()
        origin.rebuild_index_if_due()
        settle_s = time.perf_counter() - t0
        origin.save_index()
        keypoints = origin.keypoints.description() if origin.keypoints is not None else "no keypoint index"
        indexes = f"{origin.index.description}; {keypoints}"

        rng = np.random.default_rng(0)
        families = ["tone", "restyle", "noise_recompress", "overlay", "crop_resize", "palette"]
        queries = []
        for q in range(args.queries):
            target = int(rng.integers(len(refs)))
            edited = apply(families[q % len(families)], Image.open(refs[target]).convert("RGB"), seed=q)
            queries.append((jpeg_bytes(edited), refs[target].name))
        query_sets = {"edited": queries, "large": [
            (jpeg_bytes(Image.open(io.BytesIO(data)).resize(LARGE_SIZE, Image.Resampling.BICUBIC)), name)
            for data, name in queries[:args.large_queries]]}
        # One server; every query is sent once per configuration of its set, back to back in
        # a rotating order (the settings are swapped between calls), so a slow spell of a shared
        # machine hits all configurations alike and "inpainting adds" is a per-query difference.
        server = OriginServer(dataclasses.replace(settings, port=0), origin=origin)
        port = server.start()
        server.loaded.wait(60)
        latencies = {label: [] for label in CONFIGS}
        hits = dict.fromkeys(CONFIGS, 0)
        try:
            with OriginClient(f"127.0.0.1:{port}") as client:
                client.wait_until_serving()
                for query_set, queries_of_set in query_sets.items():
                    labels = [label for label, (_, qs) in CONFIGS.items() if qs == query_set]
                    for q, (data, name) in enumerate(tqdm(queries_of_set, desc=f"queries ({query_set})",
                                                          unit="q", dynamic_ncols=True)):
                        for k in range(len(labels)):
                            label = labels[(q + k) % len(labels)]
                            origin.settings = dataclasses.replace(settings, **CONFIGS[label][0])
                            t0 = time.perf_counter()
                            reply = client.identify(data, top_k=10)
                            latencies[label].append(time.perf_counter() - t0)
                            hits[label] += reply.candidates[0].reference.external_id == name
        finally:
            origin.settings = settings
            server.stop(grace=1)
        timings = {label: (np.array(latencies[label]) * 1000, hits[label] / len(query_sets[qs]))
                   for label, (_, qs) in CONFIGS.items()}
    finally:
        origin.close()

    result = {
        "machine": machine(), "references": len(items), "failed": failed,
        "ingest_images_per_s": round(len(items) / ingest_s, 1), "ingest_seconds": round(ingest_s, 1),
        "embed_images_per_s": round(embed_rate, 1), "queries": len(queries),
        "index_settle_seconds": round(settle_s, 1), "index": indexes, "date": time.strftime("%Y-%m-%d"),
    }
    result["configurations"] = {
        label: {"query_p50_ms": round(float(np.percentile(lat, 50)), 1),
                "query_p99_ms": round(float(np.percentile(lat, 99)), 1), "top1_edited_queries": round(top1, 3)}
        for label, (lat, top1) in timings.items()}
    result["inpainting_adds"] = {
        label: {"p50_ms": round(float(np.percentile(d, 50)), 1), "p99_ms": round(float(np.percentile(d, 99)), 1)}
        for label, d in ((label, timings[label][0] - timings[without][0]) for label, without in PAIRS.items())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    table = (
        "| references | ingest images/s | embed images/s | query configuration | query p50 | query p99 "
        "| top-1 (edited) |\n|---:|---:|---:|---|---:|---:|---:|\n"
    )
    for label, c in result["configurations"].items():
        table += (f"| {result['references']:,} | {result['ingest_images_per_s']} | {result['embed_images_per_s']} | "
                  f"{label} | {c['query_p50_ms']} ms | {c['query_p99_ms']} ms | {c['top1_edited_queries']} |\n")
    table += ("\n| inpainting verdict adds (per query, with minus without) | p50 | p99 |\n|---|---:|---:|\n")
    for label, d in result["inpainting_adds"].items():
        table += f"| {label} vs {PAIRS[label]} | {d['p50_ms']} ms | {d['p99_ms']} ms |\n"
    table += (f"\nIndexes: {result['index']} (rebuilt after the ingest in {result['index_settle_seconds']} s, "
              f"as a server's maintenance does).\n")
    table += (f"\nMachine: {result['machine']}. Date: {result['date']}. Queries: {len(queries)} edited copies, "
              f"sent one at a time over gRPC on loopback, timed end to end, each once per configuration, "
              f"back to back in rotating order; the 12 MP rows send the first "
              f"{len(query_sets['large'])} of them upscaled to {LARGE_SIZE[0]} x {LARGE_SIZE[1]}. Command: "
              f"`python -m bench.service --references {args.references} --queries {args.queries} "
              f"--large-queries {args.large_queries}`.\n")
    (RESULTS / "service.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
