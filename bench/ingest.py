"""Ingest rate: today's single process against Ray Data with 1 and 2 embedding workers.

    python -m bench.ingest --images 400

The same images (procedural scenes saved as JPEG) go into a fresh database each time. The
rate is taken between the first and the last finished image, so start-up (the models, a
local Ray) is not counted; the wall time with it is reported too. Writes
``bench/results/ingest.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.service import machine
from origin_id.indexer.config import Settings
from origin_id.indexer.origin_index import OriginIndex
from origin_id.indexer.sources import iter_source_rows, iter_sources
from origin_id.indexer.store.embedded import EmbeddedPostgres
from origin_id.server.demo import sample_scene

RESULTS = Path(__file__).resolve().parent / "results"


def fresh_database(root: Path) -> tuple[EmbeddedPostgres, str]:
    pg = EmbeddedPostgres(root / "pg")
    url = pg.start()
    return pg, url


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")


def single_process(folder: Path, root: Path) -> dict:
    pg, url = fresh_database(root)
    started = time.monotonic()
    settings = Settings.from_env({}, data_dir=root / "single", database_url=url, inpainting=False)
    origin = OriginIndex.open(settings)
    times = []
    for outcome in origin.pipeline.run(iter_sources([folder], collection="bench")):
        assert outcome.error is None, outcome.error
        times.append(time.monotonic())
    origin.close()
    pg.stop(force=True)
    return {"images_per_s": rate(times), "wall_s": time.monotonic() - started}


def on_ray(folder: Path, root: Path, workers: int, n: int) -> dict:
    import ray

    from origin_id.indexer.model_bundle import ModelBundle
    from origin_id.indexer.ray_ingest import run_on_ray
    from origin_id.indexer.store.migrate import upgrade
    from origin_id.indexer.store.postgres import PostgresStore

    pg, url = fresh_database(root)
    store = PostgresStore.from_url(url)
    upgrade(store.engine)
    store.close()
    settings = Settings.from_env({}, database_url=url)
    version = ModelBundle.load(dataclasses.replace(settings, inpainting=False)).version
    started, times = time.monotonic(), []
    summary = run_on_ray(settings, url, version, iter_source_rows([folder], collection="bench"), n, workers=workers,
                         on_row=lambda row: times.append(time.monotonic()))
    ray.shutdown()
    pg.stop(force=True)
    assert summary.counts["new"] == n, summary.counts
    return {"images_per_s": rate(times), "wall_s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="origin-id-ingest-"))
    root.chmod(0o755)
    folder = root / "images"
    folder.mkdir()
    for i in range(args.images):
        sample_scene(500_000 + i, (640, 480)).save(folder / f"i{i:05d}.jpg", quality=90)
    rows = {"single process (origin-id ingest, today)": single_process(folder, root / "a")}
    for workers in (1, 2):
        rows[f"Ray Data, {workers} embedding worker{'s' if workers > 1 else ''}"] = on_ray(
            folder, root / f"ray{workers}", workers, args.images)
    one = rows["Ray Data, 1 embedding worker"]["images_per_s"]
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "images": args.images, "rows": rows,
              "command": "python -m bench.ingest " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(result, indent=2))
    single = rows["single process (origin-id ingest, today)"]["images_per_s"]
    lines = ["| ingest | images/s (steady) | vs one Ray worker | vs the single process | wall time with start-up |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['images_per_s'] / one:.2f}x | "
                     f"{r['images_per_s'] / single:.2f}x | {r['wall_s']:.0f} s |")
    lines += ["", f"Machine: {result['machine']}. Date: {result['date']}. {args.images} JPEG scenes of 640 x 480 "
              f"into a fresh embedded PostgreSQL each run; a Ray worker embeds with the CPUs divided among the "
              f"workers. Command: `{result['command']}`."]
    (args.out / "ingest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
