"""The main job, end to end on the embedded default: ``origin-id demo`` / ``make demo``.

1. draws a sample reference set under ``DATA_DIR/samples`` (procedural scenes made
   here with NumPy and Pillow, so the demo needs nothing beyond ``pip install .``);
2. starts the gRPC server on the embedded default (embedded PostgreSQL under
   ``DATA_DIR``, CPU FAISS, bundled weights) and waits for SERVING;
3. ingests the samples through the bulk ``AddReferences`` stream;
4. queries edited copies of some of them, a copy with a region smoothed over (its
   inpainting mask is written beside the samples) and an image that is in no
   gallery, through ``IdentifyOrigin``, printing each answer;
5. stops the server (index checkpointed, PostgreSQL stopped).

Re-running it is cheap: the samples are already stored, so ingestion skips them.
The edits are plain Pillow operations, not the project's training edits.
"""

from __future__ import annotations

import dataclasses
import io
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps
from tqdm import tqdm

from origin_id.indexer.config import Settings
from origin_id.server import formatting
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.app import OriginServer
from origin_id.server.client import OriginClient

#: Seeds of the sample scenes, and of the one that is in no gallery.
FIRST_SEED, UNRELATED_SEED = 1000, 999_999


def sample_scene(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A deterministic scene: a smooth colour field, shapes in random colours and a fine texture."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.uniform(0, 255, (4, 5, 3)).astype(np.uint8)
    field = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            points = [(int(rng.integers(x0, x1)), int(rng.integers(y0, y1))) for _ in range(5)]
            draw.polygon(points, fill=colour)
    field = field.filter(ImageFilter.GaussianBlur(1.2))
    grain = rng.normal(0, 6, (h, w, 1))
    return Image.fromarray(np.clip(np.asarray(field, np.float32) + grain, 0, 255).astype(np.uint8))


def _jpeg(im: Image.Image, quality: int = 88) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _caption(im: Image.Image) -> Image.Image:
    out = ImageOps.expand(im, border=(0, 0, 0, im.height // 6), fill=(250, 250, 250))
    ImageDraw.Draw(out).text((12, im.height + 8), "shared 2h ago - see the full story", fill=(20, 20, 20))
    return out


def _crop(im: Image.Image) -> Image.Image:
    w, h = im.size
    return im.crop((w // 12, h // 12, w - w // 12, h - h // 12)).resize((w * 2 // 3, h * 2 // 3))


def _recompress(im: Image.Image) -> Image.Image:
    small = im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR)
    return Image.open(io.BytesIO(_jpeg(small, 35))).convert("RGB")


#: (name, what it does, the edit): everyday copy edits made with Pillow.
EDITS: list[tuple[str, str, Callable[[Image.Image], Image.Image]]] = [
    ("tone", "brighter, more contrast and colour", lambda im: ImageEnhance.Color(ImageEnhance.Contrast(
        ImageEnhance.Brightness(im).enhance(1.15)).enhance(1.2)).enhance(1.3)),
    ("crop", "cropped by 1/12 on each side and downscaled", _crop),
    ("caption", "posted with a caption bar", _caption),
    ("mirror", "mirrored", ImageOps.mirror),
    ("recompress", "halved and re-saved as a low-quality JPEG", _recompress),
]


def heal_over(im: Image.Image, seed: int = 3) -> Image.Image:
    """An elliptic region painted over with a blur of itself, its edge feathered: what a
    healing brush leaves where it removed something (the region loses the image's grain)."""
    rng = np.random.default_rng(seed)
    w, h = im.size
    pw, ph = w // 4, h // 4
    x, y = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
    mask = Image.new("L", im.size, 0)
    ImageDraw.Draw(mask).ellipse((x, y, x + pw, y + ph), fill=255)
    out = im.copy()
    out.paste(im.filter(ImageFilter.GaussianBlur(10)), (0, 0), mask.filter(ImageFilter.GaussianBlur(2)))
    return out


def write_samples(folder: Path, n_images: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_images):
        path = folder / f"scene-{FIRST_SEED + i:05d}.png"
        if not path.exists():
            sample_scene(FIRST_SEED + i).save(path)
        paths.append(path)
    return paths


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def run_demo(settings: Settings, n_images: int = 48) -> int:
    data_dir = Path(settings.data_dir)
    samples = write_samples(data_dir / "samples", n_images)
    print(f"[1/4] {len(samples)} sample reference images in {data_dir / 'samples'}")

    settings = dataclasses.replace(settings, host="127.0.0.1", port=_port(settings.port))
    server = OriginServer(settings)
    port = server.start()
    address = f"127.0.0.1:{port}"
    try:
        with OriginClient(address, settings.max_message_mib) as client:
            print(f"[2/4] server on {address}: {client.health_status()}; loading models and index ...")
            client.wait_until_serving(timeout=600)
            print(f"      {client.health_status()}")
            _ingest(client, samples)
            print("[4/4] queries: edited copies of references, a copy with a region smoothed over, "
                  "and an image that is in no gallery")
            _queries(client, samples, data_dir)
    finally:
        server.stop()
    return 0


def _ingest(client: OriginClient, samples: list[Path]) -> None:
    requests = (pb.AddReferenceRequest(image=p.read_bytes(), external_id=p.name, collection="demo",
                                       source_uri=p.resolve().as_uri(), labels={"set": "demo"})
                for p in samples)
    counts = {"new": 0, "present": 0, "failed": 0}
    for reply in tqdm(client.add_many(requests), total=len(samples), desc="[3/4] ingest", unit="img"):
        if reply.HasField("error"):
            counts["failed"] += 1
            tqdm.write(f"error: {samples[reply.index].name}: {reply.error.message}")
        else:
            counts["new" if reply.created else "present"] += 1
    stats = client.stats()
    print(f"      {counts['new']} new, {counts['present']} already present, {counts['failed']} failed; "
          f"{stats.references} references, {stats.indexed_vectors} vectors ({stats.index_type})")


def _queries(client: OriginClient, samples: list[Path], data_dir: Path) -> None:
    traced = ranked = 0
    picks = samples[:: max(1, len(samples) // len(EDITS))][: len(EDITS)]
    for (_name, what, edit), origin_path in zip(EDITS, picks):
        reply = client.identify(_jpeg(edit(Image.open(origin_path).convert("RGB"))), top_k=3)
        right = bool(reply.candidates) and reply.candidates[0].reference.external_id == origin_path.name
        traced += right and reply.match
        ranked += right
        print()
        print(formatting.format_answer(f"{origin_path.name}, {what}", reply))
        print("  -> " + _outcome(reply.match, right))

    healed = samples[0]
    reply = client.identify(_jpeg(heal_over(Image.open(healed).convert("RGB"))), top_k=3)
    print()
    print(formatting.format_answer(f"{healed.name} with a region smoothed over", reply))
    if reply.inpainting.mask_png:
        mask_path = data_dir / "demo-inpainting-mask.png"
        mask_path.write_bytes(reply.inpainting.mask_png)
        print(f"  -> mask written to {mask_path}")

    reply = client.identify(_jpeg(sample_scene(UNRELATED_SEED)), top_k=3)
    print()
    print(formatting.format_answer("an image whose origin is not indexed", reply))
    print(f"\nsummary: {traced}/{len(picks)} edited copies matched to their origin ({ranked}/{len(picks)} "
          "ranked it first); "
          f"the image that is in no gallery: {'MATCH (wrong)' if reply.match else 'no match (right)'}")


def _outcome(match: bool, right: bool) -> str:
    if match:
        return "matched to its origin" if right else "MATCHED TO THE WRONG REFERENCE"
    return "no match declared (its origin ranks first)" if right else "no match declared, origin not first"


if __name__ == "__main__":
    sys.exit(run_demo(Settings.from_env()))
