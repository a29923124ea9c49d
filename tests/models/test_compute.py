"""The compute thread: once a service index is open, the models and FAISS searches of a
query run on one thread, whichever thread the query came from."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from origin_id.indexer.origin_index import OriginIndex
from origin_id.indexer.pipeline import IngestItem
from origin_id.models import compute
from tests.conftest import encode
from training.edits import apply


def test_run_executes_on_the_compute_thread_and_reraises():
    compute.enable()
    compute.enable()  # idempotent: still one thread
    name = compute.run(lambda: threading.current_thread().name)
    assert name.startswith("compute")
    # Re-entrant: a call made on the compute thread runs inline instead of waiting for itself.
    assert compute.run(compute.run, lambda: threading.current_thread().name) == name
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)
    # Callers on many threads all land on the one thread.
    with ThreadPoolExecutor(4) as pool:
        names = set(pool.map(lambda _: compute.run(lambda: threading.current_thread().name), range(16)))
    assert names == {name}


def test_query_models_and_search_run_on_one_thread(settings, bundle, images, reference_images):
    origin = OriginIndex.open(settings, bundle=bundle)
    try:
        list(origin.pipeline.run(IngestItem.from_bytes(d) for d in images[:6]))
        seen: dict[str, set[str]] = {"vae": set(), "detector": set(), "localizer": set(), "search": set()}

        def recorder(key):
            return lambda *args: seen[key].add(threading.current_thread().name)

        analyzer = bundle.inpainting
        hooks = [bundle.vae.encoder.register_forward_pre_hook(recorder("vae")),
                 bundle.vae.decoder.register_forward_pre_hook(recorder("vae")),
                 analyzer.detector.register_forward_pre_hook(recorder("detector")),
                 analyzer.localizer.register_forward_pre_hook(recorder("localizer"))]
        search_now = origin.index._search

        def recording_search(*args):
            recorder("search")()
            return search_now(*args)

        origin.index._search = recording_search
        query = encode(apply("overlay", reference_images[2], seed=1))
        saved = analyzer.detector.config.localize_threshold
        try:
            # Two request threads, as gRPC would use; localization forced so the localizer runs.
            analyzer.detector.config.localize_threshold = 0.0
            with ThreadPoolExecutor(2, thread_name_prefix="request") as pool:
                answers = list(pool.map(lambda _: origin.identify(query, top_k=3), range(2)))
        finally:
            analyzer.detector.config.localize_threshold = saved
            origin.index._search = search_now
            for hook in hooks:
                hook.remove()
        assert all(a.candidates and a.inpainting is not None and a.inpainting.localized for a in answers)
        for key, names in seen.items():
            assert names and all(n.startswith("compute") for n in names), (key, names)
    finally:
        origin.close()
