"""``OriginService`` handlers: translate requests to ``OriginIndex`` calls.

Each handler takes the request and its ``GrpcCall`` (``server.calls``, which admitted
the call, knows who is calling and turns every error into one status code) and checks
what the caller's key may do (``server.auth``) before touching the index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from origin_id.detectors.analyzer import InpaintingResult
from origin_id.indexer.errors import InvalidRequest, NotFound, NotReady, PermissionDenied
from origin_id.indexer.origin_index import Identification, OriginIndex
from origin_id.indexer.pipeline import IngestItem, IngestOutcome
from origin_id.indexer.store import DEFAULT_COLLECTION, Reference
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.calls import GrpcCall, Malformed, status_for
from origin_id.server.convert import reference_to_pb

log = logging.getLogger(__name__)

#: ``ListReferences`` page size when a request gives 0, and the largest it may ask.
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000


class OriginServicer:
    #: Calls that run the models: each holds an admission slot (``server.admission``).
    COMPUTE_BOUND = frozenset({"IdentifyOrigin", "AddReference", "AddReferences"})

    def __init__(self, origin: OriginIndex | None = None):
        self.origin = origin

    def _ready(self) -> OriginIndex:
        if self.origin is None:
            raise NotReady("the index is still loading; retry shortly")
        return self.origin

    def IdentifyOrigin(self, request: pb.IdentifyOriginRequest, call: GrpcCall) -> pb.IdentifyOriginResponse:
        origin = self._ready()
        call.principal.require("read", request.collection or None)
        result = origin.identify(request.image, top_k=request.top_k, collection=request.collection,
                                 scope=call.principal.scope)
        return identification_to_pb(result, origin.bundle.version)

    def AddReference(self, request: pb.AddReferenceRequest, call: GrpcCall) -> pb.AddReferenceResponse:
        origin = self._ready()
        call.principal.require("write", request.collection)
        outcome = origin.pipeline.process([_item(request)])[0]
        self._count(call, [outcome])
        if outcome.error is not None:
            raise outcome.error
        return pb.AddReferenceResponse(reference=reference_to_pb(outcome.reference), created=outcome.created)

    def AddReferences(self, request_iterator: Iterator[pb.AddReferenceRequest],
                      call: GrpcCall) -> Iterator[pb.AddReferenceResponse]:
        """The pipeline batches the stream as it arrives (``origin_id.indexer.pipeline.gather_batches``);
        an item the key may not write is that item's PERMISSION_DENIED."""
        origin = self._ready()
        call.principal.require("write")
        items = (_item(r, call) for r in request_iterator)
        try:
            for position, outcome in enumerate(origin.pipeline.run(items)):
                self._count(call, [outcome])
                yield _add_response(outcome, position)
        except grpc.RpcError:
            return  # the client went away mid-stream; what was acknowledged is committed

    def GetReference(self, request: pb.GetReferenceRequest, call: GrpcCall) -> pb.GetReferenceResponse:
        call.principal.require("read")
        return pb.GetReferenceResponse(reference=reference_to_pb(self._reference(request, call)))

    def ListReferences(self, request: pb.ListReferencesRequest, call: GrpcCall) -> pb.ListReferencesResponse:
        origin = self._ready()
        call.principal.require("read", request.collection or None)
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {request.page_size}")
        after = _page_position(request.page_token)
        refs = origin.list(request.collection, after_id=after, limit=size + 1, scope=call.principal.scope)
        more = len(refs) > size
        refs = refs[:size]
        return pb.ListReferencesResponse(references=[reference_to_pb(r) for r in refs],
                                         next_page_token=str(refs[-1].id) if more else "")

    def DeleteReference(self, request: pb.DeleteReferenceRequest, call: GrpcCall) -> pb.DeleteReferenceResponse:
        call.principal.require("admin")
        ref = self._reference(request, call)
        return pb.DeleteReferenceResponse(reference=reference_to_pb(self._ready().delete(ref.id)))

    def GetIndexStats(self, request: pb.GetIndexStatsRequest, call: GrpcCall) -> pb.GetIndexStatsResponse:
        origin = self._ready()
        call.principal.require("read")
        per_collection = origin.store.stats(call.principal.scope)
        return pb.GetIndexStatsResponse(
            references=sum(per_collection.values()), indexed_vectors=len(origin.index),
            dimension=origin.index.dim, index_type=origin.index.description,
            model_version=origin.bundle.version, device=str(origin.bundle.device),
            collections=[pb.CollectionStats(name=n, references=c) for n, c in per_collection.items()],
            match_threshold=origin.match_threshold, index_recall_at_1=origin.index.recall_at_1,
            detectors_loaded=origin.settings.inpainting and origin.bundle.inpainting is not None)

    def _reference(self, request: pb.GetReferenceRequest | pb.DeleteReferenceRequest, call: GrpcCall) -> Reference:
        """The reference a Get or Delete names, if the caller may see it: one of a collection
        the key may not read is NOT_FOUND by id (ids cannot be walked), PERMISSION_DENIED by name."""
        origin = self._ready()
        which = request.WhichOneof("key")
        if which == "id":
            ref = origin.get(request.id)
            if not call.principal.may("read", ref.collection):
                raise NotFound(f"no reference with id {request.id}")
            return ref
        if which == "external":
            call.principal.require("read", request.external.collection)
            return origin.get_by_external_id(request.external.collection, request.external.external_id)
        raise InvalidRequest("give either id or external (collection + external_id)")

    @staticmethod
    def _count(call: GrpcCall, outcomes: list[IngestOutcome]) -> None:
        for outcome in outcomes:
            kind = "failed" if outcome.error else ("new" if outcome.created else "present")
            call.metrics.ingested.labels(kind).inc()


def identification_to_pb(result: Identification, model_version: str) -> pb.IdentifyOriginResponse:
    return pb.IdentifyOriginResponse(
        candidates=[pb.Candidate(reference=reference_to_pb(c.reference), score=c.score, inliers=c.inliers,
                                 inlier_coverage=c.coverage, agreement=c.agreement)
                    for c in result.candidates], match_basis=result.match_basis,
        match=result.match, match_threshold=result.match_threshold, model_version=model_version,
        match_score=result.match_score if result.candidates else 0.0, background_score=result.background_score,
        query_width=result.query.width, query_height=result.query.height,
        inpainting=verdict_to_pb(result.inpainting))


def verdict_to_pb(result: InpaintingResult | None) -> pb.InpaintingVerdict:
    if result is None:
        return pb.InpaintingVerdict(available=False)
    verdict = pb.InpaintingVerdict(
        available=True, probability=result.probability, inpainted=result.inpainted,
        decision_threshold=result.threshold, localized=result.localized)
    if result.localized:
        verdict.mask_png = result.mask_png()
        verdict.mask_area_fraction = result.area_fraction
        box = result.bbox
        if box is not None:
            verdict.mask_bbox.CopyFrom(pb.BoundingBox(x=box[0], y=box[1], width=box[2], height=box[3]))
    return verdict


def _page_position(token: str) -> int:
    """The id a page starts after: the previous page's ``next_page_token`` (its last id)."""
    if not token:
        return 0
    if not token.isdigit() or len(token) > 19:
        raise InvalidRequest("page_token is not one this service gave out")
    return int(token)


def _item(request: pb.AddReferenceRequest | Malformed, call: GrpcCall | None = None) -> IngestItem:
    """The pipeline's item for a request; one that cannot be used is an item whose ``read``
    raises its error, so it is that item's answer in a stream."""
    if isinstance(request, Malformed):
        return _failing(InvalidRequest("this stream message is not a valid AddReferenceRequest"))
    collection = request.collection or DEFAULT_COLLECTION
    if call is not None and not call.principal.may("write", collection):
        return _failing(PermissionDenied("this key may not write to that collection"), collection)
    return IngestItem.from_bytes(request.image, collection=collection, external_id=request.external_id,
                                 source_uri=request.source_uri, labels=dict(request.labels))


def _failing(error: Exception, collection: str = DEFAULT_COLLECTION) -> IngestItem:
    def read() -> bytes:
        raise error
    return IngestItem(read=read, collection=collection)


def _add_response(outcome: IngestOutcome, position: int) -> pb.AddReferenceResponse:
    if outcome.error is not None:
        return pb.AddReferenceResponse(
            index=position, error=pb.ItemError(code=status_for(outcome.error).value[0], message=str(outcome.error)))
    return pb.AddReferenceResponse(index=position, reference=reference_to_pb(outcome.reference),
                                   created=outcome.created)
