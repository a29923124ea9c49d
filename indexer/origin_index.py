"""``OriginIndex``: the one object the server and the command line talk to.

It owns the wiring of the data flow: the model bundle (loaded once), the
store (PostgreSQL, embedded or external, migrated on open), the FAISS index
(loaded from its checkpoint or rebuilt from the store), the keypoint index
(built from the store) and the ingest pipeline. Query results are always re-read from the store, so a reference
deleted a moment ago, by this process or another, is never returned.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from origin_id.detectors.analyzer import InpaintingResult
from origin_id.indexer.candidates import Candidate, rank, scored
from origin_id.indexer.config import Settings
from origin_id.indexer.decode import DecodedImage, DecodeLimits
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.errors import DatabaseUnavailable, EmptyIndex, InvalidRequest, NotFound
from origin_id.indexer.keypoint_index import KeypointIndex
from origin_id.indexer.local_features import LocalFeatures, QueryFeatures
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.pipeline import IngestPipeline
from origin_id.indexer.query_views import query_views, views_batch
from origin_id.indexer.store import Reference
from origin_id.indexer.store.embedded import EmbeddedPostgres
from origin_id.indexer.store.feed import IndexFeed
from origin_id.indexer.store.keys import ApiKeyStore
from origin_id.indexer.store.migrate import upgrade
from origin_id.indexer.store.postgres import PostgresStore
from origin_id.indexer.validation import MAX_EXTERNAL_ID, check_collection, check_text, quote
from origin_id.indexer.vector_index import VectorIndex
from origin_id.models import compute

log = logging.getLogger(__name__)
#: The most candidates a search fetches while looking past rows deleted since the index heard.
MAX_FETCH = 4096
#: How often the index checks whether it is due for a rebuild, and the change log is pruned.
REBUILD_CHECK_S = 30.0
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class Identification:
    query: DecodedImage
    candidates: list[Candidate]
    match: bool
    match_threshold: float
    #: What ``match_threshold`` is compared with: the top-1 score less ``background_score``.
    match_score: float = 0.0
    #: The query's similarity to its k-th nearest background image times the set's weight
    #: (0 without a background set).
    background_score: float = 0.0
    #: None when no inpainting models are loaded (the answer says available=false).
    inpainting: InpaintingResult | None = None
    #: "score", "verified" (by the top-1's inliers, ``BackgroundSet.decide``) or "" (no match).
    match_basis: str = ""


def open_store(settings: Settings) -> tuple[PostgresStore, EmbeddedPostgres | None]:
    """Connect to ``DATABASE_URL`` or start the embedded cluster; migrate to head."""
    embedded = None
    url = settings.database_url
    if not url:
        embedded = EmbeddedPostgres(Path(settings.data_dir) / "postgres")
        url = embedded.start()
    store = PostgresStore.from_url(url)
    try:
        upgrade(store.engine)
        if embedded is None and store.is_superuser():
            log.warning("connected to PostgreSQL as a superuser: give the service a role that owns only its "
                        "own database (see README, Running the service)")
    except Exception:
        store.close()
        if embedded:
            embedded.stop()
        raise
    return store, embedded


class OriginIndex:
    def __init__(self, settings: Settings, bundle: ModelBundle, store: PostgresStore,
                 index: VectorIndex, embedded: EmbeddedPostgres | None = None):
        self.settings = settings
        self.bundle = bundle
        self.store = store
        self.index = index
        self.embedded = embedded
        self.embedder = Embedder(bundle, settings.batch_size, settings.region_layout)
        self.limits = DecodeLimits(max_pixels=settings.max_pixels, max_side=settings.max_side,
                                   max_whole_pixels=settings.max_whole_pixels)
        # Keypoint candidates are ranked by the inlier lead the model's background set was
        # calibrated with: without one there is nothing to rank them by, and no index is kept.
        self.rank_lead = bundle.background.ranking_lead if bundle.background is not None else 0
        self.keypoints = (KeypointIndex() if settings.keypoint_candidates > 0 and settings.verify_candidates > 0
                          and self.rank_lead > 0 else None)
        self.pipeline = IngestPipeline(store, self.embedder, index, limits=self.limits,
                                       batch_size=settings.batch_size, keypoints=self.keypoints)
        self.keys = ApiKeyStore(store)
        self.feed = IndexFeed(store)
        self.load_report = ""
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None

    @classmethod
    def open(cls, settings: Settings, bundle: ModelBundle | None = None) -> OriginIndex:
        # Models and FAISS searches on one thread from here on, including the models' loading
        # (requests arrive on many threads; see origin_id.models.compute).
        compute.enable()
        bundle = bundle or ModelBundle.load(settings)
        store, embedded = open_store(settings)
        index = VectorIndex(bundle.dim, use_gpu=settings.faiss_gpu,
                            gpu_device=(bundle.device.index or 0) if bundle.device.type == "cuda" else 0,
                            memory_budget_mib=settings.index_memory_mib)
        origin = cls(settings, bundle, store, index, embedded)
        origin.load_report = origin._load_index()
        if origin.keypoints is not None:
            origin.keypoints.rebuild(origin.feed, bundle.version)
        return origin

    def _load_index(self) -> str:
        reason = self.index.load(self.index_path, self.feed, self.bundle.version, self.settings.change_log_keep_s)
        if reason is None:
            return "loaded"
        log.warning("building the index from PostgreSQL: %s", reason)
        self.index.rebuild(self.feed, self.bundle.version)
        self.index.save(self.index_path)
        return f"built ({reason})"

    @property
    def index_path(self) -> Path:
        return Path(self.settings.data_dir) / "index" / self.bundle.version

    @property
    def match_threshold(self) -> float:
        override = self.settings.match_threshold
        return self.bundle.match_threshold if math.isnan(override) else override

    # -- queries ------------------------------------------------------------------

    def decode(self, data: bytes) -> DecodedImage:
        return self.limits.decode(data)

    def identify(self, data: bytes, top_k: int = 0, collection: str = "",
                 scope: Collection[str] | None = None) -> Identification:
        """The query's candidates, match decision and inpainting verdict, among the references
        of ``collection``, or of the collections in ``scope`` (None = all) when it is empty.

        An index with no vectors, or a ``collection`` that does not exist, is an error
        (``EmptyIndex``, ``NotFound``) rather than an empty "no match": a caller who
        searched the wrong place must not read it as "the origin is not indexed"."""
        top_k = top_k or self.settings.default_top_k
        if not 1 <= top_k <= self.settings.max_top_k:
            raise InvalidRequest(f"top_k must be between 1 and {self.settings.max_top_k}, got {top_k}")
        check_collection(collection)
        if collection:
            self.require_collection(collection)
        elif len(self.index) == 0:
            raise EmptyIndex("the index holds no references yet: add some first (origin-id ingest)")
        compute.stage("decode")
        query = self.decode(data)
        # Preprocessed once: the detectors reuse the query's view (a large photo's resize is slow),
        # verification the picture inside its borders.
        views = query_views(query.image, flip=False, trim=self.settings.query_trim)
        x = views_batch(views, flip=self.settings.query_flip)
        compute.stage("embed")
        latents = self.embedder.encode(x)
        vectors = self.embedder.project(latents)
        compute.stage("search")
        collections = [collection] if collection else scope
        candidates = self.search(vectors, top_k, collections)
        threshold = self.match_threshold
        background = (self.bundle.background.score(vectors, regions=bool(self.embedder.layout))
                      if self.bundle.background is not None else 0.0)
        compute.stage("verify")
        inner = views[1] if len(views) > 1 else None  # the picture inside the query's borders
        candidates = self.verify(query.image, candidates, vectors, collections, inner)
        match_score = candidates[0].score - background if candidates else float("-inf")
        basis = self.decide(match_score, candidates[0]) if candidates else ""
        verdict = None
        if self.settings.inpainting and self.bundle.inpainting is not None:
            compute.stage("detectors")
            # The same encoder pass serves both jobs: the detector reuses the query's latent.
            verdict = self.bundle.inpainting.analyze([query.image], latents[:1], inputs=x[:1],
                                                     sizes=[(query.width, query.height)])[0]
        return Identification(query, candidates, bool(basis), threshold, match_score=match_score,
                              inpainting=verdict, background_score=background, match_basis=basis)

    def verify(self, image: Image.Image, candidates: list[Candidate], vectors: np.ndarray,
               collections: Collection[str] | None = None, inner: Image.Image | None = None) -> list[Candidate]:
        """The candidates with their keypoint inliers: the first ``verify_candidates`` of them
        that have stored keypoints (the others keep -1), and the keypoint index's candidates
        (``keypoint_candidates``), then ranked (``candidates.rank``). ``inner``: the picture
        inside the query's borders, when it has any (``QueryFeatures``)."""
        ranks = candidates[:self.settings.verify_candidates]
        if not ranks:
            return candidates
        query = QueryFeatures.of(image, inner) if self.keypoints is not None else None
        found = self.keypoint_candidates(query, vectors, {c.reference.id for c in ranks}, collections) \
            if query is not None else []
        stored = self.store.local_features_of([c.reference.id for c in [*ranks, *found]])
        if not stored:
            return candidates
        query = query or QueryFeatures.of(image, inner)

        def verified(c: Candidate) -> Candidate:
            data = stored.get(c.reference.id)
            if data is None:
                return c
            try:
                fitted = query.fit(LocalFeatures.decode(data))
                return replace(c, inliers=fitted.inliers, coverage=fitted.coverage, agreement=fitted.agreement)
            except ValueError as exc:  # a row this code cannot read: unverified, not an error
                log.warning("reference %d: unreadable local features (%s)", c.reference.id, exc)
                return c

        # A voted reference further down the list is verified there too.
        found = {c.reference.id: verified(c) for c in found}
        rest = [found.pop(c.reference.id, c) for c in candidates[len(ranks):]]
        return rank([verified(c) for c in ranks] + rest, list(found.values()), self.rank_lead)

    def keypoint_candidates(self, query: QueryFeatures, vectors: np.ndarray, known: set[int],
                            collections: Collection[str] | None) -> list[Candidate]:
        """The references the keypoint index votes for, other than ``known`` (those verified
        already), scored from their stored vectors as ``search`` scores (of ``collections``
        only; None = all)."""
        voted = [r for r in self.keypoints.vote(query, self.settings.keypoint_candidates) if r not in known]
        if not voted:
            return []
        found = scored(vectors, self.store.reference_candidates(voted, self.bundle.version))
        if collections is not None:
            found = [c for c in found if c.reference.collection in collections]
        return found

    def decide(self, match_score: float, top1: Candidate) -> str:
        """"score", "verified" or "" (no match): the model's calibrated rule
        (``BackgroundSet.decide``) on the top-1's match score and fit, or the plain
        threshold when overridden or without a set."""
        background = self.bundle.background
        if not math.isnan(self.settings.match_threshold) or background is None:
            return "score" if match_score >= self.match_threshold else ""
        return background.decide(match_score, top1.inliers, top1.coverage, top1.agreement)

    def search(self, vectors: np.ndarray, top_k: int, collections: Collection[str] | None = None) -> list[Candidate]:
        """Best references for the query's vectors (one per view), re-read from the store.

        Each reference appears once, with its best score over the views and its stored
        vectors, scored exactly from the stored vectors (an approximate index finds the
        candidates; their scores, and so the match decision, do not depend on it).
        ``collections``: only references of these (None = all), searched among their own
        vectors at any index size."""
        allowed = None
        if collections is not None:
            allowed = np.array(sorted(self.store.collection_ids(collections).values()), np.int64)
            if not len(allowed):
                return []
        fetch = top_k * 4
        while True:
            _, ids = self.index.search(vectors, fetch, allowed)
            found = {int(i) for i in ids.ravel() if i >= 0}
            best = scored(vectors, self.store.candidates(found))
            # Rows deleted since the index last heard can leave fewer than top_k: look further.
            if len(best) >= top_k or len(found) < fetch or fetch >= MAX_FETCH:
                return best[:top_k]
            fetch *= 4

    def require_collection(self, collection: str) -> None:
        if not self.store.has_collection(check_collection(collection)):
            raise NotFound(f"no collection named {quote(collection)}")

    def list(self, collection: str = "", after_id: int = 0, limit: int = 100,
             scope: Collection[str] | None = None) -> list[Reference]:
        """References in id order after ``after_id`` (a page), of ``collection``, or of the
        collections in ``scope`` (None = all) when it is empty."""
        if check_collection(collection):
            self.require_collection(collection)
        return self.store.list_references([collection] if collection else scope, after_id, limit)

    def get(self, reference_id: int) -> Reference:
        ref = self.store.get(reference_id)
        if ref is None:
            raise NotFound(f"no reference with id {reference_id}")
        return ref

    def get_by_external_id(self, collection: str, external_id: str) -> Reference:
        check_collection(collection)
        check_text("external_id", external_id, MAX_EXTERNAL_ID, required=True)
        ref = self.store.get_by_external_id(collection, external_id)
        if ref is None:
            raise NotFound(f"no reference with external_id {quote(external_id)} in collection "
                           f"{quote(collection or 'default')}")
        return ref

    def delete(self, reference_id: int) -> Reference:
        deleted = self.store.delete(reference_id)
        if deleted is None:
            raise NotFound(f"no reference with id {reference_id}")
        ref, embedding_ids = deleted
        self.index.remove(embedding_ids)
        if self.keypoints is not None:
            self.keypoints.forget(ref.id)
        return ref

    # -- upkeep ---------------------------------------------------------------------

    def database_answers(self) -> bool:
        return self.store.ping()

    def recover_database(self) -> bool:
        """Try to bring PostgreSQL back: an embedded cluster that died is started again (on its
        port when that is free), and the store reconnects. Whether it answers now."""
        try:
            if self.embedded is not None:
                self.store.reconnect(self.embedded.start())
            else:
                self.store.reconnect()
        except Exception as exc:
            log.warning("database still unavailable: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)
            return False
        return self.store.ping()

    def save_index(self) -> None:
        self.index.save(self.index_path)

    def sync_index(self) -> tuple[int, int]:
        if self.keypoints is not None:
            self.keypoints.sync(self.feed, self.bundle.version)
        return self.index.sync(self.feed, self.bundle.version)

    def rebuild_index_if_due(self) -> bool:
        """A new base in the background when the size calls for another index, or the recent
        writes have grown past their share (``VectorIndex.needs_rebuild``); the keypoint index
        with it (deleted references leave it then), or when its own size calls for it. The
        keypoint index goes first then: one that outgrew its kind (a bulk ingest into a
        running server leaves millions of descriptors in an exact index) costs every query
        seconds, where the vectors' delta costs milliseconds, and a vector base can take
        minutes to train."""
        total = self.store.count_embeddings(self.bundle.version)
        keypoints_first = self.keypoints is not None and self.keypoints.needs_rebuild()
        if keypoints_first:
            self.keypoints.rebuild(self.feed, self.bundle.version)
        if not self.index.needs_rebuild(total):
            return False
        self.index.rebuild(self.feed, self.bundle.version, total, background=True)
        self.save_index()
        if self.keypoints is not None and not keypoints_first:
            self.keypoints.rebuild(self.feed, self.bundle.version)
        return True

    def start_maintenance(self) -> None:
        """Background: pick up other processes' writes, checkpoint the index when changed."""
        def loop() -> None:
            last_save = last_check = last_prune = 0.0
            clock = 0.0
            step = max(0.2, self.settings.index_sync_interval_s)
            while not self._stop.wait(step):
                clock += step
                try:
                    self.sync_index()
                    if clock - last_check >= REBUILD_CHECK_S:
                        last_check = clock
                        if self.rebuild_index_if_due():
                            last_save = clock
                    if self.index.dirty and clock - last_save >= self.settings.index_save_interval_s:
                        self.save_index()
                        last_save = clock
                    if clock - last_prune >= PRUNE_EVERY_S:
                        last_prune = clock
                        self.feed.prune(self.settings.change_log_keep_s)
                except DatabaseUnavailable as exc:  # the server's database watch reports and recovers
                    log.debug("index maintenance skipped: %s", exc)
                except Exception:  # keep maintaining; the next round retries
                    log.exception("index maintenance failed")

        self._maintenance = threading.Thread(target=loop, name="index-maintenance", daemon=True)
        self._maintenance.start()

    def close(self) -> None:
        self._stop.set()
        if self._maintenance:
            self._maintenance.join(timeout=10)
        self.pipeline.close()
        try:
            if self.index.dirty:
                self.save_index()
        finally:
            self.index.close()
            self.store.close()
            if self.embedded:
                self.embedded.stop()
