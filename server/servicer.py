"""``OriginService`` handlers: translate requests to ``OriginIndex`` calls.

Every handler is wrapped by ``_status``, the one place where errors become gRPC status
codes: bad input is INVALID_ARGUMENT, oversize input RESOURCE_EXHAUSTED, unknown ids
and collections NOT_FOUND, uniqueness clashes ALREADY_EXISTS, a query against an empty
index FAILED_PRECONDITION, a not-yet-loaded index UNAVAILABLE. Anything else is logged
and reported as INTERNAL; the process keeps serving.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

import grpc

from origin_id.detectors.analyzer import InpaintingResult
from origin_id.indexer.errors import Conflict, EmptyIndex, ImageTooLarge, InvalidRequest, NotFound, NotReady
from origin_id.indexer.origin_index import Identification, OriginIndex
from origin_id.indexer.pipeline import IngestItem, IngestOutcome
from origin_id.indexer.store import DEFAULT_COLLECTION
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.api.origin.v1 import origin_pb2_grpc as pb_grpc
from origin_id.server.convert import reference_to_pb

log = logging.getLogger(__name__)

#: ``ListReferences`` page size when a request gives 0, and the largest it may ask.
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
_EXPECTED = (InvalidRequest, NotFound, Conflict, NotReady, EmptyIndex)


def status_for(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, ImageTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, EmptyIndex):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, NotReady):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _status(handler):
    @functools.wraps(handler)
    def wrapped(self, request, context: grpc.ServicerContext):
        try:
            return handler(self, request, context)
        except _EXPECTED as exc:
            context.abort(status_for(exc), str(exc))
        except grpc.RpcError:
            raise
        except Exception:
            log.exception("%s failed", handler.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {handler.__name__}; see server log")
    return wrapped


class OriginServicer(pb_grpc.OriginServiceServicer):
    def __init__(self, origin: OriginIndex | None = None):
        self.origin = origin

    def _ready(self) -> OriginIndex:
        if self.origin is None:
            raise NotReady("the index is still loading; retry shortly")
        return self.origin

    @_status
    def IdentifyOrigin(self, request: pb.IdentifyOriginRequest, context) -> pb.IdentifyOriginResponse:
        origin = self._ready()
        result = origin.identify(request.image, top_k=request.top_k, collection=request.collection)
        return identification_to_pb(result, origin.bundle.version)

    @_status
    def AddReference(self, request: pb.AddReferenceRequest, context) -> pb.AddReferenceResponse:
        outcome = self._ready().pipeline.process([_item(request)])[0]
        if outcome.error is not None:
            raise outcome.error
        return pb.AddReferenceResponse(reference=reference_to_pb(outcome.reference), created=outcome.created)

    def AddReferences(self, request_iterator: Iterator[pb.AddReferenceRequest],
                      context) -> Iterator[pb.AddReferenceResponse]:
        """The pipeline batches the stream as it arrives (``origin_id.indexer.pipeline.gather_batches``)."""
        try:
            origin = self._ready()
        except NotReady as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        try:
            for position, outcome in enumerate(origin.pipeline.run(_item(r) for r in request_iterator)):
                yield _add_response(outcome, position)
                if not context.is_active():
                    return
        except grpc.RpcError:
            return  # the client went away mid-stream; what was acknowledged is committed
        except Exception:
            log.exception("AddReferences failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error while adding a batch; see server log")

    @_status
    def GetReference(self, request: pb.GetReferenceRequest, context) -> pb.GetReferenceResponse:
        origin = self._ready()
        which = request.WhichOneof("key")
        if which == "id":
            ref = origin.get(request.id)
        elif which == "external":
            ref = origin.get_by_external_id(request.external.collection, request.external.external_id)
        else:
            raise InvalidRequest("give either id or external (collection + external_id)")
        return pb.GetReferenceResponse(reference=reference_to_pb(ref))

    @_status
    def ListReferences(self, request: pb.ListReferencesRequest, context) -> pb.ListReferencesResponse:
        origin = self._ready()
        size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {request.page_size}")
        after = _page_position(request.page_token)
        refs = origin.list(request.collection, after_id=after, limit=size + 1)
        more = len(refs) > size
        refs = refs[:size]
        return pb.ListReferencesResponse(references=[reference_to_pb(r) for r in refs],
                                         next_page_token=str(refs[-1].id) if more else "")

    @_status
    def DeleteReference(self, request: pb.DeleteReferenceRequest, context) -> pb.DeleteReferenceResponse:
        origin = self._ready()
        which = request.WhichOneof("key")
        if which == "id":
            ref_id = request.id
        elif which == "external":
            ref_id = origin.get_by_external_id(request.external.collection, request.external.external_id).id
        else:
            raise InvalidRequest("give either id or external (collection + external_id)")
        return pb.DeleteReferenceResponse(reference=reference_to_pb(origin.delete(ref_id)))

    @_status
    def GetIndexStats(self, request: pb.GetIndexStatsRequest, context) -> pb.GetIndexStatsResponse:
        origin = self._ready()
        per_collection = origin.store.stats()
        return pb.GetIndexStatsResponse(
            references=sum(per_collection.values()), indexed_vectors=len(origin.index),
            dimension=origin.index.dim, index_type=origin.index.description,
            model_version=origin.bundle.version, device=str(origin.bundle.device),
            collections=[pb.CollectionStats(name=n, references=c) for n, c in per_collection.items()],
            match_threshold=origin.match_threshold,
            detectors_loaded=origin.settings.inpainting and origin.bundle.inpainting is not None)


def identification_to_pb(result: Identification, model_version: str) -> pb.IdentifyOriginResponse:
    return pb.IdentifyOriginResponse(
        candidates=[pb.Candidate(reference=reference_to_pb(c.reference), score=c.score)
                    for c in result.candidates],
        match=result.match, match_threshold=result.match_threshold, model_version=model_version,
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


def _item(request: pb.AddReferenceRequest) -> IngestItem:
    return IngestItem.from_bytes(
        request.image, collection=request.collection or DEFAULT_COLLECTION, external_id=request.external_id,
        source_uri=request.source_uri, labels=dict(request.labels))


def _add_response(outcome: IngestOutcome, position: int) -> pb.AddReferenceResponse:
    if outcome.error is not None:
        return pb.AddReferenceResponse(
            index=position, error=pb.ItemError(code=status_for(outcome.error).value[0], message=str(outcome.error)))
    return pb.AddReferenceResponse(index=position, reference=reference_to_pb(outcome.reference),
                                   created=outcome.created)
