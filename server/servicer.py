"""``OriginService`` handlers: translate requests to ``OriginIndex`` calls.

Every handler is wrapped by ``_status``, the one place where errors become
gRPC status codes: bad input is INVALID_ARGUMENT, oversize input
RESOURCE_EXHAUSTED, unknown ids NOT_FOUND, uniqueness clashes ALREADY_EXISTS,
not-yet-loaded index UNAVAILABLE. Anything else is logged and reported as
INTERNAL; the process keeps serving.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Iterator

import grpc

from detectors.analyzer import InpaintingResult
from indexer.errors import Conflict, ImageTooLarge, InvalidRequest, NotFound, NotReady
from indexer.origin_index import Identification, OriginIndex
from indexer.pipeline import IngestItem, IngestOutcome
from indexer.store import DEFAULT_COLLECTION
from server.api.origin.v1 import origin_pb2 as pb
from server.api.origin.v1 import origin_pb2_grpc as pb_grpc
from server.convert import reference_to_pb

log = logging.getLogger(__name__)


def status_for(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, ImageTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, NotReady):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _status(handler):
    @functools.wraps(handler)
    def wrapped(self, request, context: grpc.ServicerContext):
        try:
            return handler(self, request, context)
        except (InvalidRequest, NotFound, Conflict, NotReady) as exc:
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

    def AddReferences(self, request_iterator: Iterator[pb.AddReferenceRequest], context) -> Iterator[
            pb.AddReferenceResponse]:
        try:
            origin = self._ready()
        except NotReady as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        # A reader thread drains the stream so batches form from what has
        # arrived, without waiting for a full batch when the client is slow.
        inbox: queue.Queue = queue.Queue(maxsize=origin.pipeline.batch_size * 4)
        done = object()

        def read() -> None:
            try:
                for request in request_iterator:
                    inbox.put(request)
            except grpc.RpcError:
                pass  # client went away; the handler sees the cancelled context
            except Exception as exc:
                inbox.put(exc)
            inbox.put(done)

        threading.Thread(target=read, name="add-references-reader", daemon=True).start()
        position = 0
        finished = False
        while not finished:
            batch = [inbox.get()]
            while len(batch) < origin.pipeline.batch_size:
                try:
                    batch.append(inbox.get(timeout=0.02))
                except queue.Empty:
                    break
            if batch[-1] is done:
                batch.pop()
                finished = True
            for item in batch:
                if isinstance(item, Exception):
                    context.abort(grpc.StatusCode.INTERNAL, f"reading the request stream failed: {item}")
            try:
                outcomes = origin.pipeline.process([_item(r) for r in batch]) if batch else []
            except Exception:
                log.exception("AddReferences batch failed")
                context.abort(grpc.StatusCode.INTERNAL, "internal error while adding a batch; see server log")
            for outcome in outcomes:
                yield _add_response(outcome, position)
                position += 1
            if not context.is_active():
                return

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
            match_threshold=origin.match_threshold, detectors_loaded=False)


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
