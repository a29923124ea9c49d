"""Image bytes -> RGB pixels, or a precise reason why not.

Everything a client sends goes through ``decode_image`` first. It checks the
header before decoding pixels so a decompression bomb (a tiny file that
declares a huge canvas) is refused without allocating the canvas, applies
the EXIF orientation (phones store portraits sideways) and flattens alpha on
white, since a transparent background has no colour of its own.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from indexer.errors import ImageError, ImageTooLarge

#: Formats decoded. Anything else PIL can open is refused: fewer parsers, fewer surprises.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})


__all__ = ["DecodedImage", "ImageError", "ImageTooLarge", "decode_image", "sha256_hex"]


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, orientation applied
    sha256: str  # of the bytes as received
    format: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, max_pixels: int, max_side: int) -> DecodedImage:
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns (and at 2x errors) on big images; our own limit applies instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image ({len(data)} bytes, starts {data[:8].hex()})") from None
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
    try:
        im.seek(0)  # first frame of animations
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # in place: otherwise a full copy even when upright
        im = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"image data is corrupt or truncated: {exc}") from None
    return DecodedImage(image=im, sha256=sha256_hex(data), format=fmt)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")  # convert() would copy an RGB image
