"""Image bytes -> RGB pixels, or a precise reason why not.

Everything a client sends goes through ``decode_image`` first. It checks the
header before decoding pixels so a decompression bomb (a tiny file that
declares a huge canvas) is refused without allocating the canvas, applies
the EXIF orientation (phones store portraits sideways) and flattens alpha on
white, since a transparent background has no colour of its own.

Nothing downstream looks at more than a 512 px version of an image (the models
see 256 x 256, the border trim 512 px), so a large JPEG is decoded at a reduced
scale (libjpeg's DCT scaling, ``Image.draft``: 1/2, 1/4 or 1/8, never below
``WORKING_SIDE`` on either side): a large photo decodes faster (the entropy decoding
stays) into a fraction of the memory. ``DecodedImage``
keeps the image's own size for everything that reports or draws in its pixels (the
stored width and height, the inpainting mask).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from origin_id.indexer.errors import ImageError, ImageTooLarge

#: Formats decoded. Anything else PIL can open is refused: fewer parsers, fewer surprises.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})


__all__ = ["DecodeLimits", "DecodedImage", "ImageError", "ImageTooLarge", "decode_image", "sha256_hex"]


#: Shortest side a reduced-scale JPEG decode may have (see the module docstring).
WORKING_SIDE = 512


@dataclass(frozen=True)
class DecodeLimits:
    """The largest image accepted (``Settings.max_pixels`` / ``max_side`` / ``max_whole_pixels``)."""

    max_pixels: int
    max_side: int
    max_whole_pixels: int | None = None

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, max_pixels=self.max_pixels, max_side=self.max_side,
                            max_whole_pixels=self.max_whole_pixels)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied; a large JPEG at a reduced scale
    sha256: str  # of the bytes as received
    format: str
    #: The image's own size (orientation applied), whatever scale ``image`` was decoded at.
    width: int
    height: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, max_pixels: int, max_side: int, max_whole_pixels: int | None = None) -> DecodedImage:
    """``data`` as an RGB image. ``max_pixels`` bounds any image; ``max_whole_pixels`` (None =
    the same) bounds the formats decoded whole, all but JPEG, whose cost in time and memory
    grows with every pixel while a large JPEG is read at a reduced scale."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns (and at 2x errors) on big images; our own limit applies instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image ({len(data)} bytes)") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read image header: {exc}") from None
    fmt = im.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"unsupported image format {fmt}; accepted: {', '.join(sorted(SUPPORTED_FORMATS))}")
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if max(w, h) > max_side:
        raise ImageTooLarge(f"image is {w}x{h}; the longest side allowed is {max_side}")
    if w * h > max_pixels:
        raise ImageTooLarge(f"image is {w}x{h} = {w * h} pixels; at most {max_pixels} are allowed")
    reduced = fmt in ("JPEG", "MPO")
    if not reduced and max_whole_pixels is not None and w * h > max_whole_pixels:
        raise ImageTooLarge(f"image is {w}x{h} = {w * h} pixels; a {fmt} is decoded whole, and at most "
                            f"{max_whole_pixels} pixels are (a JPEG may have up to {max_pixels})")
    try:
        if reduced and min(w, h) >= 2 * WORKING_SIDE:
            im.draft(im.mode, (WORKING_SIDE, WORKING_SIDE))  # libjpeg: the smallest scale >= that
        # EXIF orientations 5-8 store the picture sideways: its own size has the sides swapped.
        width, height = (h, w) if im.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8) else (w, h)
        im.seek(0)  # first frame of animations
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # in place: otherwise a full copy even when upright
        im = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"image data is corrupt or truncated: {exc}") from None
    return DecodedImage(image=im, sha256=sha256_hex(data), format=fmt, width=width, height=height)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")  # convert() would copy an RGB image
