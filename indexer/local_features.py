"""Local features: the second signal of a reference, for geometric verification.

The ID2 embedding is one global vector per view or region: it cannot tell "this is a
crop, a tilted or framed copy of that picture" from "this looks like that picture".
Copy-detection systems answer the first question with local features: keypoints whose
descriptors match between the query and a candidate *and* agree on one geometric
transform are strong evidence that one image was made from the other, and unrelated
images of a similar look rarely produce many.

So each reference stores its ORB keypoints (OpenCV; binary descriptors, 32 bytes each)
beside its vectors, and a query's top candidates are verified against them: descriptor
matches (Lowe's ratio test), then a similarity transform (rotation, scale, shift; a
crop, pad, tilt or a picture inside a post is one) fitted by RANSAC. The number of
matches that fit it (the *inliers*) is the verification score, and the share of the
query's area they span (their convex hull's, the *coverage*) says how much of the query
the fit explains: a copy is made of its origin almost everywhere, while two different
pictures that share one part (a drawn figure, a dialog's frame, a diagram's box) fit
many inliers inside that part only. Both are independent of the ID2 models (a model
change re-embeds references but never recomputes these), and the match decision uses
them only as calibrated (``origin_id.indexer.open_set``).

Inliers and coverage still cannot tell a crop of a drawing (10-40 inliers, covering a
fifth of the query: ORB finds no corners in flat areas) from two pictures that share a
part. The pixels can: each reference also keeps its picture in grey at
``PICTURE_SIDE``, and a fit's *agreement* is the correlation of the query's pixels with
the reference's, the reference warped onto the query by the fitted transform, over all
the area they share, or tile by tile where a caption or sticker covers part of a copy.
A copy agrees almost everywhere, whatever its keypoints; two pictures that share a
figure or a frame disagree everywhere else (``agreement``).

Stored format (``encode``/``decode``): a 6-byte header (format version, keypoint count,
the analysed image's longer side), then float16 (x, y) pixel positions in the analysed
copy, then the descriptors; from format 2 on, the picture's height and width (uint16)
and its grey pixels (at most ``PICTURE_SIDE`` square, 16 KB). Format 1 rows (no picture)
are still read: their fits have no agreement.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import cv2
import faiss
import numpy as np
from PIL import Image, ImageOps

#: Images are analysed at this longer side, up or down: a crop and its origin then differ
#: in scale by the crop's factor only, well within ORB's pyramid, and a small image still
#: leaves keypoints clear of ORB's 31-pixel border.
ANALYSIS_SIDE = 512
MAX_KEYPOINTS = 500
#: Lowe's ratio test: the best descriptor match must be this much closer than the second.
RATIO = 0.8
MIN_MATCHES = 4
#: Scales (query pixels to reference pixels, both at ``ANALYSIS_SIDE``) a copy can have: a
#: crop keeping 1/8 of a side, or a picture an eighth of its post.
SCALE_RANGE = (1 / 8, 8.0)
#: A reference's stored picture, longer side: a crop keeping half of each side is then
#: compared over 64 x 64 of its origin's pixels, plenty to tell it from another picture.
PICTURE_SIDE = 128
#: An agreement over fewer shared pixels (of the reference's picture) is not measured.
MIN_SHARED_PIXELS = 64
#: Tiles of the stored picture that vote in ``_tile_agreement`` (an 8 x 8 grid on a square
#: picture), the grey-level spread below which a tile is flat, and the fewest textured
#: tiles whose median is worth taking (fewer: one or two tiles would decide).
TILE = 16
MIN_TILE_STD = 4.0
MIN_TILES = 8
FORMAT_VERSION = 2
_HEADER = struct.Struct("<HHH")
_PICTURE_HEADER = struct.Struct("<HH")
DESCRIPTOR_BYTES = 32
#: Where the stored form's keypoints end, for a reader of their bytes alone (the keypoint
#: index, ``decode(keypoints_only=True)``): after the header, the keypoint count (a
#: little-endian uint16 at ``COUNT_OFFSET``) times ``BYTES_PER_KEYPOINT``. ORB may return a
#: few more than ``MAX_KEYPOINTS``, so no fixed length bounds them.
HEADER_BYTES = _HEADER.size
COUNT_OFFSET = 2
BYTES_PER_KEYPOINT = 4 + DESCRIPTOR_BYTES

# OpenCV's own thread pool would compete with the models' threads for the same cores;
# one image's keypoints take a few milliseconds on one thread.
cv2.setNumThreads(1)


@dataclass(frozen=True)
class LocalFeatures:
    points: np.ndarray  # float32 (n, 2): x, y in pixels of the analysed copy
    descriptors: np.ndarray  # uint8 (n, 32): ORB descriptors
    side: int  # the analysed copy's longer side, in pixels
    #: The analysed copy's area in pixels, for a query's coverage; 0 = unknown (stored
    #: references do not keep it: coverage is measured on the query's side).
    area: int = 0
    #: The analysed copy in grey (uint8, any size: a query keeps it whole, a reference at
    #: ``PICTURE_SIDE``), for a fit's agreement; None = not kept (format 1 rows).
    picture: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def as_reference(self) -> LocalFeatures:
        """What a reference stores of these features (``encode``): the picture at ``PICTURE_SIDE``."""
        if self.picture is None or max(self.picture.shape) <= PICTURE_SIDE:
            return replace(self, area=0)
        h, w = self.picture.shape
        scale = PICTURE_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return replace(self, area=0, picture=cv2.resize(self.picture, size, interpolation=cv2.INTER_AREA))

    def encode(self) -> bytes:
        stored = self.as_reference()
        picture = stored.picture if stored.picture is not None else np.zeros((0, 0), np.uint8)
        return (_HEADER.pack(FORMAT_VERSION, len(self), self.side)
                + self.points.astype("<f2").tobytes() + self.descriptors.astype(np.uint8).tobytes()
                + _PICTURE_HEADER.pack(*picture.shape) + np.ascontiguousarray(picture, np.uint8).tobytes())

    @classmethod
    def decode(cls, data: bytes, keypoints_only: bool = False) -> LocalFeatures:
        """``encode``'s bytes read back; ``keypoints_only``: the bytes up to the last
        descriptor are enough, and the picture is not read (the keypoint index's rows)."""
        if len(data) < _HEADER.size:
            raise ValueError(f"local features of {len(data)} bytes: shorter than their header")
        version, n, side = _HEADER.unpack_from(data)
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"local features of format {version}; this code reads formats 1-{FORMAT_VERSION}")
        end = keypoints_end = _HEADER.size + n * (4 + DESCRIPTOR_BYTES)
        h = w = 0
        if keypoints_only and len(data) >= end:
            end = len(data)
        elif version >= 2:
            if len(data) >= end + _PICTURE_HEADER.size:
                h, w = _PICTURE_HEADER.unpack_from(data, end)
            end += _PICTURE_HEADER.size + h * w
        if len(data) != end:
            raise ValueError(f"local features of {n} keypoints (format {version}) need {end} bytes, got {len(data)}")
        picture = np.frombuffer(data, np.uint8, h * w, keypoints_end + _PICTURE_HEADER.size).reshape(h, w) \
            if h * w else None
        points = np.frombuffer(data, "<f2", 2 * n, _HEADER.size).astype(np.float32).reshape(n, 2)
        descriptors = np.frombuffer(data, np.uint8, n * DESCRIPTOR_BYTES, _HEADER.size + 4 * n)
        return cls(points, descriptors.reshape(n, DESCRIPTOR_BYTES), side, picture=picture)


def extract(image: Image.Image) -> LocalFeatures:
    """ORB keypoints of ``image`` (any mode), analysed in grey at ``ANALYSIS_SIDE``."""
    grey = image.convert("L")
    scale = ANALYSIS_SIDE / max(grey.size)
    if scale != 1.0:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = np.asarray(grey)
    keypoints, descriptors = cv2.ORB_create(nfeatures=MAX_KEYPOINTS).detectAndCompute(pixels, None)
    area = grey.width * grey.height
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8),
                             max(grey.size), area, pixels)
    points = np.array([k.pt for k in keypoints], np.float32)
    return LocalFeatures(points, descriptors, max(grey.size), area, pixels)


@dataclass(frozen=True, order=True)
class Fit:
    """How a query fits a reference: the inliers of one similarity transform, the share of
    the query's area their convex hull spans (0 when the area is unknown), and how well the
    two pictures agree where the transform lays one on the other (``agreement``; 0 when
    either has no picture). Ordered by inliers first."""

    inliers: int = 0
    coverage: float = 0.0
    agreement: float = 0.0


@dataclass(frozen=True)
class QueryFeatures:
    """A query's keypoints, its mirror image's (ORB descriptors are not mirror-invariant, and
    mirrored copies are a copy edit the service matches), and those of the picture inside its
    borders when it has any (``query_views.trim_borders``: a picture small inside a post or
    a screenshot keeps few keypoints when the whole post is analysed at ``ANALYSIS_SIDE``)."""

    plain: LocalFeatures
    mirrored: LocalFeatures
    inner: LocalFeatures | None = None

    @classmethod
    def of(cls, image: Image.Image, inner: Image.Image | None = None) -> QueryFeatures:
        return cls(extract(image), extract(ImageOps.mirror(image)), extract(inner) if inner is not None else None)

    @property
    def views(self) -> list[LocalFeatures]:
        return [v for v in (self.plain, self.mirrored, self.inner) if v is not None]

    def fit(self, reference: LocalFeatures) -> Fit:
        """The views' best ``fit`` against ``reference`` (most inliers; its coverage is of
        that view: the picture inside a post is covered as the picture, not as the post).
        The pixels' agreement is measured for the best views only (it only breaks their
        ties), not for every view of every candidate."""
        fits = [(view, *_geometric_fit(view, reference)) for view in self.views]
        best = max(fitted for _, fitted, _ in fits)
        return max(_agreed(fitted, transform, view, reference) for view, fitted, transform in fits if fitted == best)

    def inliers(self, reference: LocalFeatures) -> int:
        return self.fit(reference).inliers


def inliers(query: LocalFeatures, reference: LocalFeatures) -> int:
    """``fit``'s inlier count alone."""
    return _geometric_fit(query, reference)[0].inliers


def fit(query: LocalFeatures, reference: LocalFeatures) -> Fit:
    """How many of the query's keypoints match the reference's and agree on one similarity
    transform (RANSAC, a tolerance of 1% of the reference's side + 2 pixels), how much of
    the query they cover, and how well the pixels agree under it (``agreement``); no fit
    when too few match to fit one, or when it is degenerate.

    Each reference keypoint counts once (its closest match): an image with a handful of
    keypoints would otherwise collect many query points on each, and a transform that
    shrinks the query onto them fits them all. For the same reason a fit whose scale is
    outside ``SCALE_RANGE`` counts nothing: no copy shrinks or grows its origin that much."""
    return _agreed(*_geometric_fit(query, reference), query=query, reference=reference)


def _agreed(fitted: Fit, transform: np.ndarray | None, query: LocalFeatures, reference: LocalFeatures) -> Fit:
    """``fitted`` with the pixels' agreement under its ``transform`` (none: no fit, no agreement)."""
    return replace(fitted, agreement=agreement(query, reference, transform)) if transform is not None else fitted


def _geometric_fit(query: LocalFeatures, reference: LocalFeatures) -> tuple[Fit, np.ndarray | None]:
    """``fit`` without the agreement, and the fitted transform (None: no fit)."""
    if len(query) < MIN_MATCHES or len(reference) < MIN_MATCHES:
        return Fit(), None
    query_index, reference_index = matches(query.descriptors, reference.descriptors)
    if len(query_index) < MIN_MATCHES:
        return Fit(), None
    source, target = query.points[query_index], reference.points[reference_index]
    cv2.setRNGSeed(0)  # RANSAC draws samples: the same pair always gets the same count
    transform, fitted = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                    ransacReprojThreshold=0.01 * reference.side + 2.0)
    if transform is None or fitted is None:
        return Fit(), None
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return Fit(), None
    kept = source[fitted.ravel().astype(bool)]
    hull = cv2.contourArea(cv2.convexHull(kept)) if len(kept) >= 3 else 0.0
    return Fit(len(kept), min(1.0, hull / query.area) if query.area else 0.0), transform


def matches(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor matches (query rows, reference rows) that pass Lowe's ratio test, each
    reference descriptor once (its closest query descriptor; the earliest on a tie), in the
    order of the first query descriptor that reached each: what OpenCV's brute-force
    ``knnMatch`` and a loop over its pairs give, found by FAISS's exact binary search and
    array operations (no Python loop over the pairs)."""
    index = faiss.IndexBinaryFlat(8 * DESCRIPTOR_BYTES)
    index.add(np.ascontiguousarray(reference, np.uint8))
    # On one thread: a search this small gains nothing from OpenMP, and each parallel region
    # wakes the team of threads the models share, which costs more than the search (see
    # docs/evaluation.md). The setting is the calling thread's own, restored after.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        distances, nearest = index.search(np.ascontiguousarray(query, np.uint8), 2)
    finally:
        faiss.omp_set_num_threads(threads)
    passed = np.flatnonzero(distances[:, 0] < RATIO * distances[:, 1])
    refs, dist = nearest[passed, 0], distances[passed, 0]
    order = np.lexsort((passed, dist, refs))  # by reference row, then distance, then query row
    starts = np.flatnonzero(np.r_[True, refs[order][1:] != refs[order][:-1]]) if len(order) else order
    closest = order[starts]
    first_reached = np.minimum.reduceat(passed[order], starts) if len(order) else starts
    chosen = closest[np.argsort(first_reached, kind="stable")]
    return passed[chosen], refs[chosen]


def agreement(query: LocalFeatures, reference: LocalFeatures, transform: np.ndarray) -> float:
    """The correlation of the query's grey pixels with the reference's where ``transform``
    (query to reference pixels, both analysed copies) lays them on each other, compared at
    the reference picture's resolution; 0 when either has no picture or they share under
    ``MIN_SHARED_PIXELS``. A normalised correlation, so a copy's brightness and contrast
    changes (grading, grey, JPEG) keep it near 1, while another picture sharing one part
    of it (a figure, a frame) falls with the area where they differ. The median tile's
    correlation (``_tile_agreement``) when it is higher: a copy partly covered."""
    if query.picture is None or reference.picture is None:
        return 0.0
    target = reference.picture.astype(np.float32)
    # Query picture pixels to reference picture pixels, through the analysed copies.
    to_target = transform * (max(target.shape) / reference.side)
    to_target[:, :2] /= max(query.picture.shape) / query.side
    scale = float(np.hypot(to_target[0, 0], to_target[1, 0]))
    source = query.picture
    if scale < 1.0:  # shrink first: a warp that skips pixels would compare aliases
        h, w = source.shape
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        source = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
        to_target[:, 0] *= w / size[0]
        to_target[:, 1] *= h / size[1]
    size = (target.shape[1], target.shape[0])
    warped = cv2.warpAffine(source.astype(np.float32), to_target, size, flags=cv2.INTER_LINEAR)
    shared = cv2.warpAffine(np.ones(source.shape, np.float32), to_target, size, flags=cv2.INTER_LINEAR) > 0.999
    if shared.sum() < MIN_SHARED_PIXELS:
        return 0.0
    a, b = warped[shared] - warped[shared].mean(), target[shared] - target[shared].mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    whole = float((a * b).sum() / norm) if norm > 0 else 0.0
    return max(whole, _tile_agreement(warped, target, shared))


def _tile_agreement(warped: np.ndarray, target: np.ndarray, shared: np.ndarray) -> float:
    """The median correlation of ``TILE``-pixel tiles that both pictures cover wholly and
    where the reference has texture (0 with fewer than ``MIN_TILES`` of them).

    The whole overlap's correlation falls with any area the copy covers: a caption band,
    stickers, an inpainted patch. Tile by tile, a copy with a minority covered still agrees
    in most tiles, while another picture sharing a part agrees in that part's tiles only.
    The whole overlap's figure stays beside it (``agreement`` takes the better): blur and
    noise weaken small tiles' correlations more than the whole's. Flat tiles say nothing
    (any two flat areas correlate by chance), so only textured ones vote."""
    rows, cols = target.shape[0] // TILE, target.shape[1] // TILE

    def tiles(image: np.ndarray) -> np.ndarray:
        cut = image[:rows * TILE, :cols * TILE]
        return cut.reshape(rows, TILE, cols, TILE).swapaxes(1, 2).reshape(rows * cols, TILE * TILE)

    query, reference = tiles(warped), tiles(target)
    kept = tiles(shared).all(1) & (reference.std(1) >= MIN_TILE_STD)
    if kept.sum() < MIN_TILES:
        return 0.0
    a = query[kept] - query[kept].mean(1, keepdims=True)
    b = reference[kept] - reference[kept].mean(1, keepdims=True)
    norm = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    correlation = np.divide((a * b).sum(1), norm, out=np.zeros(len(a), np.float32), where=norm > 0)
    return float(np.median(correlation))
