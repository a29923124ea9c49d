"""Bulk ingestion on a local Ray: the same rows and vectors as the single-process pipeline,
per-item errors in a report, and a killed job run again without duplicates or losses. Ray
takes a while to start, so these run in the slow suite."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import ProgrammingError

from origin_id.indexer.embedder import Embedder
from origin_id.indexer.local_features import extract
from origin_id.indexer.regions import DEFAULT_LAYOUT
from origin_id.indexer.store.postgres import PostgresStore
from origin_id.indexer.store.schema import embeddings, references
from origin_id.server.cli import main
from tests.server.test_cli import ENV, cli
from training.data import procedural_image

pytestmark = pytest.mark.slow
pytest.importorskip("ray")


def counts(url):
    store = PostgresStore.from_url(url)
    with store.engine.connect() as conn:
        refs = conn.execute(select(func.count()).select_from(references)).scalar_one()
        distinct = conn.execute(select(func.count(func.distinct(references.c.sha256)))).scalar_one()
        vectors = conn.execute(select(func.count()).select_from(embeddings)).scalar_one()
    return store, refs, distinct, vectors


def test_ray_ingest_writes_what_the_service_would_and_reports_failures(database_url, bundle, open_tmp_path, capsys):
    folder = open_tmp_path / "imgs"
    folder.mkdir()
    images = [procedural_image(80_000 + i, size=256) for i in range(12)]
    for i, im in enumerate(images):
        im.save(folder / f"s{i:02d}.png")
    manifest = open_tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "imgs/s00.png", "external_id": "again"}) + "\n"
                        + json.dumps({"path": "imgs/missing.png"}) + "\n")
    report = open_tmp_path / "errors.jsonl"
    where = ["--database-url", database_url, "--ray", "--workers", "2", "--report", str(report)]
    assert main(["ingest", str(folder), str(manifest), *where]) == 1  # one row failed
    assert "ingested 14 images: 12 new, 1 already present, 1 failed" in capsys.readouterr().out
    failed = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(failed) == 1 and "missing.png" in failed[0]["error"] and failed[0]["where"].endswith("m.jsonl:2")
    store, refs, distinct, vectors = counts(database_url)
    per_reference = 1 + len(DEFAULT_LAYOUT)  # whole image and regions, as the service stores them
    assert (refs, distinct, vectors) == (12, 12, 12 * per_reference)
    # The vectors are the service's: the same model on the same 256 px view.
    stored = store.candidates(range(1, per_reference + 1))
    expected = Embedder(bundle, layout=DEFAULT_LAYOUT).reference_vectors([images[0]])[0]
    np.testing.assert_allclose(np.stack([stored[i][1] for i in sorted(stored)]), expected, atol=1e-3)
    # And so are the keypoints: found from the decoded image, stored with the reference.
    reference_id = stored[min(stored)][0].id
    assert store.local_features_of([reference_id]) == {reference_id: extract(images[0]).encode()}
    assert len(store.local_features_of(range(1, 100))) == 12
    store.close()
    assert main(["ingest", str(folder), *where]) == 0
    assert "12 already present" in capsys.readouterr().out


def test_a_killed_ray_ingest_run_again_loses_nothing_and_duplicates_nothing(database_url, open_tmp_path):
    folder = open_tmp_path / "many"
    folder.mkdir()
    for i in range(96):
        procedural_image(90_000 + i, size=256).save(folder / f"m{i:02d}.png")
    command = cli("ingest", str(folder), "--database-url", database_url, "--ray", "--workers", "2",
                  "--report", str(open_tmp_path / "r.jsonl"))
    log = open_tmp_path / "ingest.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True, env=ENV)
        # Kill once some batches have committed, judged by the database itself rather than
        # the progress bar (which counts embedded images, not written ones).
        # A safety net, not a measured figure: a loaded 2-core host takes minutes to start
        # Ray and load the model in both workers.
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                store, written, _, _ = counts(database_url)
                store.close()
            except ProgrammingError:  # the job has not created the tables yet
                written = 0
            if written >= 8:
                break
            time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The driver's local Ray outlives a SIGKILL: stop it, as a job scheduler would.
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=120)
    _, partial, _, _ = counts(database_url)
    assert 0 < partial < 96, (partial, log.read_text()[-500:])
    again = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=1200)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{96 - partial} new, {partial} already present" in again.stdout
    store, refs, distinct, vectors = counts(database_url)
    store.close()
    assert (refs, distinct, vectors) == (96, 96, 96 * (1 + len(DEFAULT_LAYOUT)))
