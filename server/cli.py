"""``origin-id``: serve, ingest, query, and look after the index.

    origin-id serve   --data-dir DIR [--port 50051] [--database-url URL]
    origin-id ingest  PATH... [--collection C] [--server HOST:PORT]
    origin-id query   IMAGE [--top-k 5] [--json] [--server HOST:PORT]
    origin-id stats   [--server HOST:PORT]
    origin-id db upgrade | current
    origin-id demo    --data-dir DIR
    origin-id train-transform ...   (see training/train_transform.py)

Without ``--server`` the command works on the data directory itself
(embedded PostgreSQL under it, or ``--database-url``); with it, it talks to a
running server over gRPC. Settings come from flags, then ``ORIGIN_ID_*``
environment variables (see ``indexer.config``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from indexer.config import Settings

# The embedded PostgreSQL is started with subprocess (fork + exec) while gRPC
# threads run; gRPC's fork handlers are for forks that keep running Python.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

log = logging.getLogger("origin-id")


# -- serve ---------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import OriginServer

    settings = Settings.from_args(args)
    server = OriginServer(settings)
    stopping = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    port = server.start()
    print(f"origin-id serving on {settings.host}:{port}", flush=True)
    while not stopping.wait(0.5):
        if server.load_error is not None:
            server.stop(grace=0)
            return 1
    server.stop(grace=10)
    return 0


# -- ingest --------------------------------------------------------------------------

def cmd_ingest(args: argparse.Namespace) -> int:
    """Streams the sources (nothing is held per item beyond the batch in flight)."""
    from collections import deque

    from indexer.sources import count_sources, iter_sources

    settings = Settings.from_args(args)
    paths = [Path(p) for p in args.paths]
    total = count_sources(paths)
    items = iter_sources(paths, collection=args.collection)
    counts = {"created": 0, "present": 0, "failed": 0}
    bar = tqdm(total=total, desc="ingest", unit="img", dynamic_ncols=True)

    def record(ok: bool, created: bool, what: str, error: str = "") -> None:
        key = "failed" if not ok else ("created" if created else "present")
        counts[key] += 1
        if not ok:
            tqdm.write(f"error: {what}: {error}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(counts)

    if args.server:
        from server.api.origin.v1 import origin_pb2 as pb
        from server.client import OriginClient

        in_flight: deque = deque()  # replies come back in request order

        def requests():
            for item in items:
                in_flight.append(item.source_uri)
                yield pb.AddReferenceRequest(image=item.read(), external_id=item.external_id,
                                             collection=item.collection, source_uri=item.source_uri,
                                             labels=item.labels)

        with OriginClient(args.server, settings.max_message_mib) as client:
            client.wait_until_serving(timeout=600)
            for reply in client.add_many(requests()):
                record(not reply.HasField("error"), reply.created, in_flight.popleft(), reply.error.message)
    else:
        from indexer.origin_index import OriginIndex

        origin = OriginIndex.open(settings)
        try:
            for outcome in origin.pipeline.run(items):
                record(outcome.error is None, outcome.created, outcome.item.source_uri, str(outcome.error))
        finally:
            origin.close()
    bar.close()
    done = sum(counts.values())
    print(f"ingested {done} images: {counts['created']} new, {counts['present']} already present, "
          f"{counts['failed']} failed")
    return 1 if counts["failed"] else 0


# -- query ---------------------------------------------------------------------------

def cmd_query(args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)
    data = Path(args.image).read_bytes()
    if args.server:
        from server.client import OriginClient

        with OriginClient(args.server, settings.max_message_mib) as client:
            reply = client.identify(data, top_k=args.top_k, collection=args.collection)
    else:
        from indexer.origin_index import OriginIndex
        from server.servicer import identification_to_pb

        origin = OriginIndex.open(settings)
        try:
            reply = identification_to_pb(origin.identify(data, top_k=args.top_k, collection=args.collection),
                                         origin.bundle.version)
        finally:
            origin.close()
    if args.mask_out and reply.inpainting.mask_png:
        Path(args.mask_out).write_bytes(reply.inpainting.mask_png)
    result = reply_to_dict(reply)
    # The mask is binary PNG data: written with --mask-out, summarised in the printed answer.
    result.get("inpainting", {}).pop("mask_png", None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_answer(Path(args.image).name, result))
    return 0


def reply_to_dict(reply) -> dict:
    """An IdentifyOriginResponse as the plain dict that ``--json`` prints and ``format_answer`` reads."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def format_answer(name: str, result: dict) -> str:
    verdict = "MATCH" if result.get("match") else "no match"
    lines = [f"{name}: {verdict} (threshold {float(result.get('match_threshold', 0)):.3f})",
             f"  {'rank':>4}  {'score':>6}  {'id':>6}  {'collection':<12} {'external_id':<28} source"]
    for rank, cand in enumerate(result.get("candidates", []), start=1):
        ref = cand["reference"]
        lines.append(f"  {rank:>4}  {float(cand['score']):6.3f}  {int(ref['id']):>6}  "
                     f"{ref.get('collection', ''):<12} {ref.get('external_id', '')[:28]:<28} "
                     f"{ref.get('source_uri', '')}")
    lines.append("  " + format_verdict(result.get("inpainting", {})))
    return "\n".join(lines)


def format_verdict(v: dict) -> str:
    if not v.get("available"):
        return "inpainting: not checked (no inpainting models loaded)"
    head = (f"inpainting: {'INPAINTED' if v.get('inpainted') else 'not inpainted'} "
            f"(p={float(v.get('probability', 0)):.3f}, threshold {float(v.get('decision_threshold', 0)):.3f})")
    if not v.get("localized"):
        return head + "; localization skipped (confidently clean)"
    box = v.get("mask_bbox") or {}
    return (head + f"; mask covers {100 * float(v.get('mask_area_fraction', 0)):.1f}% of the image"
            + (f", bbox x={box.get('x', 0)} y={box.get('y', 0)} w={box.get('width', 0)} h={box.get('height', 0)}"
               if box else ""))


# -- stats / db --------------------------------------------------------------------

def cmd_stats(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from server.client import OriginClient

    settings = Settings.from_args(args)
    with OriginClient(args.server, settings.max_message_mib) as client:
        print(json.dumps(MessageToDict(client.stats(), preserving_proto_field_name=True), indent=2))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from indexer.origin_index import open_store
    from indexer.store.migrate import current_revision, head_revision

    settings = Settings.from_args(args)
    store, embedded = open_store(settings)  # opening migrates to head
    try:
        print(f"database at revision {current_revision(store.engine)} (head {head_revision()})")
    finally:
        store.close()
        if embedded:
            embedded.stop()
    return 0


def cmd_train_transform(rest: list[str]) -> int:
    from training.train_transform import main as train_main

    train_main(rest)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from server.demo import run_demo

    return run_demo(Settings.from_args(args), n_extra=args.extra_images)


# -- parser ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="origin-id", description="Image origin identification service")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    local = ["data_dir", "database_url", "vae", "transform", "detectors", "inpainting", "device", "batch_size",
             "max_pixels", "max_side", "faiss_gpu", "max_message_mib", "default_top_k", "max_top_k", "match_threshold"]

    p = sub.add_parser("serve", help="run the gRPC server")
    Settings.add_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ingest", help="add images (files, folders, CSV/JSONL manifests)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--collection", default="default")
    p.add_argument("--server", default="", help="HOST:PORT of a running server (else work locally)")
    Settings.add_arguments(p, only=local)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("query", help="where did this image come from?")
    p.add_argument("image")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--collection", default="")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--mask-out", default="", help="write the inpainting mask PNG here when one was computed")
    p.add_argument("--server", default="", help="HOST:PORT of a running server (else work locally)")
    Settings.add_arguments(p, only=local)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("stats", help="index statistics from a running server")
    p.add_argument("--server", default="127.0.0.1:50051")
    Settings.add_arguments(p, only=["max_message_mib"])
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("db", help="database schema")
    p.add_argument("action", choices=["upgrade", "current"])
    Settings.add_arguments(p, only=["data_dir", "database_url"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("demo", help="serve + ingest a sample set + query edited copies, then stop")
    p.add_argument("--extra-images", type=int, default=60, help="procedural images added to the samples")
    Settings.add_arguments(p)
    p.set_defaults(func=cmd_demo)

    sub.add_parser("train-transform", help="train the ID2 linear transform (see --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-transform"]:
        logging.basicConfig(level=logging.INFO)
        return cmd_train_transform(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "faiss.loader", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        print(f"origin-id {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
