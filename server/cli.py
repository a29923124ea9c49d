"""``origin-id``: serve, ingest, query, and look after the references.

    origin-id serve   [--data-dir DIR] [--host H] [--port 50051] [--database-url URL]
    origin-id ingest  PATH... [--collection C]
    origin-id query   IMAGE [--top-k 5] [--collection C] [--json] [--mask-out M.png]
    origin-id get     ID | --external-id X [--collection C] [--json]
    origin-id delete  ID | --external-id X [--collection C]
    origin-id list    [--collection C] [--page-size 50] [--page-token T | --all] [--json]
    origin-id stats   [--json]
    origin-id db      upgrade | current
    origin-id demo

Every client command talks gRPC. With ``--server HOST:PORT`` (or ``ORIGIN_ID_SERVER``)
it talks to a running server; without, it starts a private server on the data
directory for the length of the command (``ingest`` creates the directory, the others
refuse one that does not exist). Settings come from flags, then ``ORIGIN_ID_*``
environment variables (``origin_id.indexer.config``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import grpc
from tqdm import tqdm

from origin_id.indexer.config import Settings
from origin_id.server import formatting, logs
from origin_id.server.operator import UsageError, cmd_db, cmd_keys

# The embedded PostgreSQL is started with subprocess (fork + exec) while gRPC
# threads run; gRPC's fork handlers are for forks that keep running Python.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

log = logging.getLogger("origin-id")




# -- talking to a server ------------------------------------------------------------------

@contextlib.contextmanager
def connect(settings: Settings, *, create: bool = False):
    """An ``OriginClient`` for ``settings.server``, or for a private server on the data
    directory, started for this command and stopped after it (``create``: the directory
    may be new; otherwise one that does not exist is an error, not an empty index)."""
    from origin_id.server.client import OriginClient

    if settings.server:
        with OriginClient.from_settings(settings) as client:
            yield client
        return
    data_dir = Path(settings.data_dir)
    if not create and not settings.database_url and not (data_dir / "postgres").is_dir():
        raise UsageError(f"no index at {data_dir}: ingest images first (origin-id ingest PATH --data-dir "
                         f"{data_dir}), or pass --server HOST:PORT to ask a running server")
    from origin_id.server.app import OriginServer

    # Reached only by this process, for this command: no keys, no TLS, no metrics endpoint.
    server = OriginServer(dataclasses.replace(settings, host="127.0.0.1", port=0, auth="off", tls_cert="",
                                              tls_key="", tls_client_ca="", metrics_port=0))
    port = server.start()
    try:
        server.loaded.wait()
        if server.load_error is not None:
            raise UsageError(f"cannot open the index at {data_dir}: {server.load_error}")
        with OriginClient(f"127.0.0.1:{port}", settings.max_message_mib) as client:
            yield client
    finally:
        server.stop(grace=5)


# -- serve -----------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from origin_id.server import memory

    memory.limit_arenas()  # before the server's threads allocate
    from origin_id.server.app import OriginServer

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


# -- ingest ----------------------------------------------------------------------------

def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Streams the sources through ``AddReferences``; nothing is held per item beyond the
    batches in flight. A file that cannot be read is that item's error, reported here."""
    from origin_id.indexer.errors import InvalidRequest
    from origin_id.indexer.sources import iter_sources, scan_sources
    from origin_id.server.api.origin.v1 import origin_pb2 as pb

    paths = [Path(p) for p in args.paths]
    try:
        scan = scan_sources(paths)
    except InvalidRequest as exc:
        raise UsageError(str(exc)) from None
    if args.ray is not None:
        return _ingest_on_ray(args, settings, paths, scan)
    counts = {"new": 0, "present": 0, "failed": 0}
    bar = tqdm(total=scan.items, desc="ingest", unit="img", dynamic_ncols=True)

    def record(key: str, what: str = "", error: str = "") -> None:
        counts[key] += 1
        if error:
            tqdm.write(f"error: {what}: {error}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(counts)

    in_flight: deque[str] = deque()  # replies come back in request order

    def requests() -> Iterator[pb.AddReferenceRequest]:
        for item in iter_sources(paths, collection=args.collection, allow_any_path=args.allow_any_path):
            try:
                image = item.read()
            except (InvalidRequest, OSError) as exc:
                record("failed", item.source_uri or item.external_id or "manifest row", str(exc))
                continue
            in_flight.append(item.source_uri)
            yield pb.AddReferenceRequest(image=image, external_id=item.external_id, collection=item.collection,
                                         source_uri=item.source_uri, labels=item.labels)

    with connect(settings, create=True) as client:
        client.wait_until_serving(timeout=600)
        for reply in client.add_many(requests()):
            what = in_flight.popleft()
            if reply.HasField("error"):
                record("failed", what, reply.error.message)
            else:
                record("new" if reply.created else "present")
    bar.close()
    print(f"ingested {sum(counts.values())} images: {counts['new']} new, {counts['present']} already present, "
          f"{counts['failed']} failed")
    if scan.skipped:
        shown = ", ".join(str(p) for p in scan.skipped[:10])
        more = f" and {len(scan.skipped) - 10} more" if len(scan.skipped) > 10 else ""
        print(f"skipped {len(scan.skipped)} files that are not images: {shown}{more}")
    return 1 if counts["failed"] else 0


def _ingest_on_ray(args: argparse.Namespace, settings: Settings, paths: list[Path], scan) -> int:
    """The same stages on Ray Data, writing to the database itself (a serving index picks the
    rows up through the change log)."""
    from origin_id.indexer.model_bundle import ModelBundle
    from origin_id.indexer.origin_index import open_store
    from origin_id.indexer.ray_ingest import run_on_ray
    from origin_id.indexer.sources import iter_source_rows

    if settings.server:
        raise UsageError("--ray writes to the database itself: give --data-dir or DATABASE_URL, not --server")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray Data: pip install 'origin-id[ray]'") from None
    store, embedded = open_store(settings)
    try:
        url = embedded.url if embedded else settings.database_url
        version = ModelBundle.load(dataclasses.replace(settings, inpainting=False)).version
        rows = iter_source_rows(paths, collection=args.collection, allow_any_path=args.allow_any_path)
        summary = run_on_ray(settings, url, version, rows, scan.items, address="" if args.ray == "local" else args.ray,
                             workers=args.ray_workers, report=Path(args.report))
    finally:
        store.close()
        if embedded:
            embedded.stop()
    counts = summary.counts
    print(f"ingested {sum(counts.values())} images: {counts['new']} new, {counts['present']} already present, "
          f"{counts['failed']} failed" + (f" (listed in {args.report})" if counts["failed"] else ""))
    return 1 if counts["failed"] else 0


# -- query and the references ---------------------------------------------------------------

def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = Path(args.image).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.image}: {exc.strerror or exc}") from None
    with connect(settings) as client:
        reply = client.identify(data, top_k=args.top_k, collection=args.collection)
    if args.mask_out and reply.inpainting.mask_png:
        Path(args.mask_out).write_bytes(reply.inpainting.mask_png)
    if args.json:
        print(formatting.dumps(reply, drop=("inpainting.mask_png",)))
    else:
        print(formatting.format_answer(Path(args.image).name, reply))
    return 0


def _key(args: argparse.Namespace) -> dict:
    if (args.id is None) == (not args.external_id):
        raise UsageError("give a reference id, or --external-id (with --collection)")
    if args.id is not None:
        return {"reference_id": args.id}
    return {"collection": args.collection, "external_id": args.external_id}


def cmd_get(args: argparse.Namespace, settings: Settings) -> int:
    key = _key(args)
    with connect(settings) as client:
        ref = client.get(**key)
    print(formatting.dumps(ref) if args.json else formatting.format_reference(ref))
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    key = _key(args)
    with connect(settings) as client:
        ref = client.delete(**key)
    print(f"deleted reference {ref.id} ({ref.collection}/{ref.external_id or ref.sha256[:12]})")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as client:
        token, first = args.page_token, True
        while True:
            page = client.list(collection=args.collection, page_size=args.page_size, page_token=token)
            if args.json:
                print(formatting.dumps(page))
            else:
                if first:
                    print(formatting.REFERENCE_HEADER)
                for line in formatting.format_reference_rows(page.references):
                    print(line)
            first, token = False, page.next_page_token
            if not token or not args.all:
                break
        if token and not args.json:
            print(f"more: origin-id list --page-token {token}" + (f" --collection {args.collection}"
                                                                   if args.collection else ""))
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as client:
        stats = client.stats()
    print(formatting.dumps(stats) if args.json else formatting.format_stats(stats))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from origin_id.server.demo import run_demo

    return run_demo(settings, n_images=args.images)


# -- parser ------------------------------------------------------------------------------

#: Settings a client command may need: where the data is (local mode) or the server is.
CLIENT_SETTINGS = ["server", "api_key", "tls_ca", "tls_client_cert", "tls_client_key", "data_dir", "database_url",
                   "vae", "transform", "detectors", "inpainting", "inpainting_precision", "device", "batch_size",
                   "max_pixels", "max_side", "max_whole_pixels", "faiss_gpu", "max_message_mib", "default_top_k",
                   "max_top_k", "match_threshold", "log_format"]


def _reference_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", nargs="?", type=int, help="the reference's id")
    p.add_argument("--external-id", default="", help="the reference's external_id (with --collection)")
    p.add_argument("--collection", default="", help="collection of --external-id (empty = default)")


def _command(sub, name: str, func, help: str, settings: list[str] | None = CLIENT_SETTINGS,
             exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A subcommand running ``func``, with the flags of ``settings`` (None = every setting)."""
    p = sub.add_parser(name, help=help)
    Settings.add_arguments(p, only=settings, exclude=list(exclude))
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="origin-id", description="Image origin identification service")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (serve: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    as_json = {"action": "store_true", "help": "print JSON instead of a table"}

    _command(sub, "serve", cmd_serve, "run the gRPC server", settings=None, exclude=("server",))

    p = _command(sub, "ingest", cmd_ingest, "add images (files, folders, CSV/JSONL manifests)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--collection", default="default", help="collection of files and rows that name none")
    p.add_argument("--allow-any-path", action="store_true",
                   help="let manifest rows name files outside the manifest's folder, or URLs (fsspec)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a cluster's address, or none for a local Ray started for the job")
    p.add_argument("--workers", dest="ray_workers", type=int, default=0,
                   help="--ray: embedding workers (0 = one per CPU or GPU)")
    p.add_argument("--report", default="ingest-errors.jsonl", help="--ray: where failed items are listed")

    p = _command(sub, "query", cmd_query, "where did this image come from?")
    p.add_argument("image")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--collection", default="", help="search this collection only (empty = all)")
    p.add_argument("--json", **as_json)
    p.add_argument("--mask-out", default="", help="write the inpainting mask PNG here when one was computed")

    p = _command(sub, "get", cmd_get, "show one reference")
    _reference_key(p)
    p.add_argument("--json", **as_json)

    _reference_key(_command(sub, "delete", cmd_delete, "delete one reference (from the store and the index)"))

    p = _command(sub, "list", cmd_list, "list references, a page at a time")
    p.add_argument("--collection", default="", help="this collection only (empty = all)")
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="", help="the token the previous page printed")
    p.add_argument("--all", action="store_true", help="every page, one after another")
    p.add_argument("--json", action="store_true", help="print each page as JSON")

    _command(sub, "stats", cmd_stats, "counts per collection, index, model").add_argument("--json", **as_json)

    p = _command(sub, "db", cmd_db, "database schema", settings=["data_dir", "database_url"])
    p.add_argument("action", choices=["upgrade", "current"])

    p = _command(sub, "keys", cmd_keys, "API keys: create, list, revoke (on the database)",
                 settings=["data_dir", "database_url"])
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("id", nargs="?", type=int, help="revoke: the key's id")
    p.add_argument("--role", choices=["read", "write", "admin"], default="read")
    p.add_argument("--collection", default=None, help="the one collection the key may use")
    p.add_argument("--all-collections", action="store_true", help="a key for every collection")
    p.add_argument("--name", default="", help="who or what the key is for")
    p.add_argument("--rate-limit", type=float, default=None, help="calls per second (default: the server's)")

    p = _command(sub, "demo", cmd_demo, "serve + ingest sample images + query edited copies, then stop",
                 settings=None, exclude=("server",))
    p.add_argument("--images", type=int, default=48, help="sample reference images to make and ingest")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    level = "INFO" if args.command in ("serve", "demo") and args.log_level == "WARNING" else args.log_level
    try:
        settings = Settings.from_args(args)
        logs.configure(level, settings.log_format)
        status = args.func(args, settings)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away (``origin-id list | head``): stop quietly, and keep the
        # interpreter's final flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, ValueError, LookupError, OSError) as exc:
        print(f"origin-id {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"origin-id {args.command}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
