import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from origin_id.indexer.decode import ImageError, ImageTooLarge, decode_image, sha256_hex
from tests.conftest import encode

LIMITS = {"max_pixels": 40_000_000, "max_side": 20_000}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decodes_jpeg_and_hashes_the_bytes():
    data = encode(Image.new("RGB", (64, 48), (200, 10, 10)))
    decoded = decode_image(data, **LIMITS)
    assert (decoded.width, decoded.height, decoded.format) == (64, 48, "JPEG")
    assert decoded.sha256 == sha256_hex(data)
    assert decoded.image.mode == "RGB"


@pytest.mark.parametrize("data, fragment", [
    (b"", "empty"),
    (b"this is not an image at all", "not a recognised image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "not a recognised image"),
])
def test_rejects_non_images(data, fragment):
    with pytest.raises(ImageError, match=fragment):
        decode_image(data, **LIMITS)


def test_rejects_truncated_image():
    data = encode(Image.effect_noise((256, 256), 40).convert("RGB"))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_rejects_unsupported_format():
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PPM")
    with pytest.raises(ImageError, match="unsupported image format PPM"):
        decode_image(buf.getvalue(), **LIMITS)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_header_only(19_000, 19_000)  # 361 Mpx declared in a ~100-byte file
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, **LIMITS)


def test_overlong_side_is_refused():
    with pytest.raises(ImageTooLarge, match="longest side"):
        decode_image(png_header_only(30_000, 10), **LIMITS)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (80, 40), (0, 128, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = encode(im, exif=exif)
    decoded = decode_image(data, **LIMITS)
    assert decoded.image.size == (40, 80) and (decoded.width, decoded.height) == (40, 80)


def test_large_jpeg_is_decoded_at_a_reduced_scale_and_keeps_its_size(reference_images):
    """Nothing downstream needs more than 512 px: libjpeg decodes at 1/2 here (both sides stay
    >= 512), the pixels match a full decode resized, and the image's own size is kept, with
    EXIF orientation applied to both."""
    photo = reference_images[0].resize((1400, 1100), Image.Resampling.BICUBIC)
    decoded = decode_image(encode(photo), **LIMITS)
    assert decoded.image.size == (700, 550) and (decoded.width, decoded.height) == (1400, 1100)
    full = Image.open(io.BytesIO(encode(photo))).convert("RGB").resize((700, 550), Image.Resampling.BOX)
    diff = np.abs(np.asarray(decoded.image, np.float32) - np.asarray(full, np.float32))
    assert diff.mean() < 2.0, diff.mean()
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = decode_image(encode(photo, exif=exif), **LIMITS)
    assert turned.image.size == (550, 700) and (turned.width, turned.height) == (1100, 1400)
    small = decode_image(encode(photo.resize((1000, 800))), **LIMITS)  # a side under 1,024: decoded whole
    assert small.image.size == (small.width, small.height) == (1000, 800)
    png = io.BytesIO()
    photo.save(png, format="PNG")
    assert decode_image(png.getvalue(), **LIMITS).image.size == (1400, 1100)


def test_alpha_is_flattened_on_white():
    buf = io.BytesIO()
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue(), **LIMITS)
    assert decoded.image.getpixel((3, 3)) == (255, 255, 255)
