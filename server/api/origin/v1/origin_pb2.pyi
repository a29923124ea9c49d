import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reference(_message.Message):
    __slots__ = ("id", "collection", "external_id", "source_uri", "sha256", "width", "height", "labels", "created_at", "model_version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: int
    collection: str
    external_id: str
    source_uri: str
    sha256: str
    width: int
    height: int
    labels: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    model_version: str
    def __init__(self, id: _Optional[int] = ..., collection: _Optional[str] = ..., external_id: _Optional[str] = ..., source_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("reference", "score", "inliers", "inlier_coverage", "agreement")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INLIERS_FIELD_NUMBER: _ClassVar[int]
    INLIER_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    reference: Reference
    score: float
    inliers: int
    inlier_coverage: float
    agreement: float
    def __init__(self, reference: _Optional[_Union[Reference, _Mapping]] = ..., score: _Optional[float] = ..., inliers: _Optional[int] = ..., inlier_coverage: _Optional[float] = ..., agreement: _Optional[float] = ...) -> None: ...

class IdentifyOriginRequest(_message.Message):
    __slots__ = ("image", "top_k", "collection")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    top_k: int
    collection: str
    def __init__(self, image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., collection: _Optional[str] = ...) -> None: ...

class InpaintingVerdict(_message.Message):
    __slots__ = ("probability", "inpainted", "mask_png", "available", "localized", "mask_area_fraction", "mask_bbox", "decision_threshold")
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    INPAINTED_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LOCALIZED_FIELD_NUMBER: _ClassVar[int]
    MASK_AREA_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MASK_BBOX_FIELD_NUMBER: _ClassVar[int]
    DECISION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    probability: float
    inpainted: bool
    mask_png: bytes
    available: bool
    localized: bool
    mask_area_fraction: float
    mask_bbox: BoundingBox
    decision_threshold: float
    def __init__(self, probability: _Optional[float] = ..., inpainted: _Optional[bool] = ..., mask_png: _Optional[bytes] = ..., available: _Optional[bool] = ..., localized: _Optional[bool] = ..., mask_area_fraction: _Optional[float] = ..., mask_bbox: _Optional[_Union[BoundingBox, _Mapping]] = ..., decision_threshold: _Optional[float] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class IdentifyOriginResponse(_message.Message):
    __slots__ = ("candidates", "match", "match_threshold", "inpainting", "model_version", "query_width", "query_height", "match_score", "background_score", "match_basis")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    MATCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INPAINTING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUERY_WIDTH_FIELD_NUMBER: _ClassVar[int]
    QUERY_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MATCH_SCORE_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_SCORE_FIELD_NUMBER: _ClassVar[int]
    MATCH_BASIS_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    match: bool
    match_threshold: float
    inpainting: InpaintingVerdict
    model_version: str
    query_width: int
    query_height: int
    match_score: float
    background_score: float
    match_basis: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., match: _Optional[bool] = ..., match_threshold: _Optional[float] = ..., inpainting: _Optional[_Union[InpaintingVerdict, _Mapping]] = ..., model_version: _Optional[str] = ..., query_width: _Optional[int] = ..., query_height: _Optional[int] = ..., match_score: _Optional[float] = ..., background_score: _Optional[float] = ..., match_basis: _Optional[str] = ...) -> None: ...

class AddReferenceRequest(_message.Message):
    __slots__ = ("image", "external_id", "collection", "source_uri", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    external_id: str
    collection: str
    source_uri: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, image: _Optional[bytes] = ..., external_id: _Optional[str] = ..., collection: _Optional[str] = ..., source_uri: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class AddReferenceResponse(_message.Message):
    __slots__ = ("reference", "created", "error", "index")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    reference: Reference
    created: bool
    error: ItemError
    index: int
    def __init__(self, reference: _Optional[_Union[Reference, _Mapping]] = ..., created: _Optional[bool] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., index: _Optional[int] = ...) -> None: ...

class GetReferenceRequest(_message.Message):
    __slots__ = ("id", "external")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    id: int
    external: ExternalKey
    def __init__(self, id: _Optional[int] = ..., external: _Optional[_Union[ExternalKey, _Mapping]] = ...) -> None: ...

class ExternalKey(_message.Message):
    __slots__ = ("collection", "external_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    external_id: str
    def __init__(self, collection: _Optional[str] = ..., external_id: _Optional[str] = ...) -> None: ...

class GetReferenceResponse(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: Reference
    def __init__(self, reference: _Optional[_Union[Reference, _Mapping]] = ...) -> None: ...

class ListReferencesRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListReferencesResponse(_message.Message):
    __slots__ = ("references", "next_page_token")
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedCompositeFieldContainer[Reference]
    next_page_token: str
    def __init__(self, references: _Optional[_Iterable[_Union[Reference, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteReferenceRequest(_message.Message):
    __slots__ = ("id", "external")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    id: int
    external: ExternalKey
    def __init__(self, id: _Optional[int] = ..., external: _Optional[_Union[ExternalKey, _Mapping]] = ...) -> None: ...

class DeleteReferenceResponse(_message.Message):
    __slots__ = ("reference",)
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    reference: Reference
    def __init__(self, reference: _Optional[_Union[Reference, _Mapping]] = ...) -> None: ...

class GetIndexStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectionStats(_message.Message):
    __slots__ = ("name", "references")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    references: int
    def __init__(self, name: _Optional[str] = ..., references: _Optional[int] = ...) -> None: ...

class GetIndexStatsResponse(_message.Message):
    __slots__ = ("references", "indexed_vectors", "dimension", "index_type", "model_version", "device", "collections", "match_threshold", "detectors_loaded", "index_recall_at_1")
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    INDEXED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    MATCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DETECTORS_LOADED_FIELD_NUMBER: _ClassVar[int]
    INDEX_RECALL_AT_1_FIELD_NUMBER: _ClassVar[int]
    references: int
    indexed_vectors: int
    dimension: int
    index_type: str
    model_version: str
    device: str
    collections: _containers.RepeatedCompositeFieldContainer[CollectionStats]
    match_threshold: float
    detectors_loaded: bool
    index_recall_at_1: float
    def __init__(self, references: _Optional[int] = ..., indexed_vectors: _Optional[int] = ..., dimension: _Optional[int] = ..., index_type: _Optional[str] = ..., model_version: _Optional[str] = ..., device: _Optional[str] = ..., collections: _Optional[_Iterable[_Union[CollectionStats, _Mapping]]] = ..., match_threshold: _Optional[float] = ..., detectors_loaded: _Optional[bool] = ..., index_recall_at_1: _Optional[float] = ...) -> None: ...
