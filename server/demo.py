"""The main job, end to end on the embedded default: ``origin-id demo`` / ``make demo``.

1. writes a sample reference set under ``DATA_DIR/samples``: scikit-image's
   bundled photographs plus procedural scenes (images the project may use);
2. starts the gRPC server on the embedded default (embedded PostgreSQL under
   ``DATA_DIR``, CPU FAISS, bundled weights) and waits for SERVING;
3. ingests the samples through the bulk ``AddReferences`` stream;
4. queries edited copies of some of them, and an image that is in no
   gallery, through ``IdentifyOrigin``, printing each answer;
5. stops the server (index checkpointed, PostgreSQL stopped).

Re-running it is cheap: the samples are already stored, so ingestion skips them.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from indexer.config import Settings
from server.api.origin.v1 import origin_pb2 as pb
from server.app import OriginServer
from server.cli import format_answer, reply_to_dict
from server.client import OriginClient
from training.data import procedural_image, skimage_images
from training.edits import apply, jpeg_bytes
from training.inpainting import inpaint

QUERIES = [("tone", "brightness / contrast / saturation change"),
           ("restyle", "painterly re-render"),
           ("overlay", "caption bar and stickers"),
           ("noise_recompress", "noise + heavy JPEG"),
           ("crop_resize", "crop and downscale"),
           ("palette", "recoloured, reduced palette")]


def write_samples(folder: Path, n_extra: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in skimage_images():
        try:
            with Image.open(src) as im:
                if min(im.size) < 128:
                    continue
                rgb = im.convert("RGB")
        except OSError:  # e.g. a multi-page TIFF codec PIL lacks
            continue
        path = folder / f"skimage-{src.stem}.jpg"
        if not path.exists():
            rgb.save(path, quality=92)
        paths.append(path)
    for i in range(n_extra):
        path = folder / f"procedural-{i:04d}.png"
        if not path.exists():
            procedural_image(10_000 + i, size=384).save(path)
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


def run_demo(settings: Settings, n_extra: int = 60) -> int:
    data_dir = Path(settings.data_dir)
    samples = write_samples(data_dir / "samples", n_extra)
    print(f"[1/4] {len(samples)} sample reference images in {data_dir / 'samples'}")

    settings = dataclasses.replace(settings, port=_port(settings.port))
    server = OriginServer(settings)
    port = server.start()
    address = f"127.0.0.1:{port}"
    try:
        with OriginClient(address, settings.max_message_mib) as client:
            print(f"[2/4] server on {address}: {client.health_status()}; loading models and index ...")
            client.wait_until_serving(timeout=600)
            print(f"      {client.health_status()}")

            requests = (pb.AddReferenceRequest(image=p.read_bytes(), external_id=p.name, collection="demo",
                                               source_uri=p.resolve().as_uri(), labels={"set": "demo"})
                        for p in samples)
            created = present = failed = 0
            for reply in tqdm(client.add_many(requests), total=len(samples), desc="[3/4] ingest", unit="img"):
                if reply.HasField("error"):
                    failed += 1
                    tqdm.write(f"error: {samples[reply.index].name}: {reply.error.message}")
                elif reply.created:
                    created += 1
                else:
                    present += 1
            stats = client.stats()
            print(f"      {created} new, {present} already present, {failed} failed; "
                  f"{stats.references} references, {stats.indexed_vectors} vectors ({stats.index_type})")

            print("[4/4] queries: edited copies of references, and one image that is in no gallery")
            traced = 0
            picks = samples[:: max(1, len(samples) // len(QUERIES))][: len(QUERIES)]
            for (family, what), origin_path in zip(QUERIES, picks):
                edited = apply(family, Image.open(origin_path).convert("RGB"), seed=7)
                reply = client.identify(jpeg_bytes(edited, 88), top_k=3)
                ok = bool(reply.candidates) and reply.candidates[0].reference.external_id == origin_path.name
                traced += ok and reply.match
                print()
                print(format_answer(f"{origin_path.name} + {family} ({what})", reply_to_dict(reply)))
                print(f"  -> origin {'found' if ok else 'NOT found'} at rank 1")
            # A copy with a region painted in: traced to its origin, and the region shown.
            painted_origin = samples[0]
            fake = inpaint(Image.open(painted_origin).convert("RGB"), "ellipse", "telea", np.random.default_rng(3))
            reply = client.identify(jpeg_bytes(fake.image, 90), top_k=3)
            print()
            print(format_answer(f"{painted_origin.name} with a region inpainted (OpenCV Telea)",
                                reply_to_dict(reply)))
            if reply.inpainting.mask_png:
                mask_path = data_dir / "demo-inpainting-mask.png"
                mask_path.write_bytes(reply.inpainting.mask_png)
                print(f"  -> mask written to {mask_path}")
            unrelated = procedural_image(999_999, size=384)
            reply = client.identify(jpeg_bytes(unrelated, 88), top_k=3)
            print()
            print(format_answer("unrelated image (origin not indexed)", reply_to_dict(reply)))
            print(f"\nsummary: {traced}/{len(picks)} edited copies traced and matched; "
                  f"unrelated image: {'MATCH (wrong)' if reply.match else 'no match (right)'}")
    finally:
        server.stop()
    return 0



if __name__ == "__main__":
    sys.exit(run_demo(Settings.from_env()))
