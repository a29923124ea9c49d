"""Where images to ingest come from: files, folders, or manifests.

* an image file: itself, ``external_id`` = its file name;
* a folder: every image below it, in sorted order, ``external_id`` = the path
  relative to the folder; other files are not ingested, and are reported
  (``SourceScan.skipped``);
* a manifest, ``.csv`` (header row) or ``.jsonl`` (one object per line), with a
  ``path`` (relative to the manifest's folder, or absolute) and optional
  ``external_id``, ``collection``, ``source_uri`` and ``labels`` (an object, or in
  CSV a JSON string; CSV columns named ``label.KEY`` work too).

A manifest row that cannot be used (no path, a file that is missing or unreadable,
labels that are not JSON) becomes an item whose ``read`` raises ``InvalidRequest``:
that row's error in the ingest report, while the rows around it are ingested. A row's
path must stay inside the manifest's folder (links resolved), unless the operator allows
any path: a manifest from elsewhere must not make the ingest read the machine's files.

Items are produced lazily (bytes are read when their batch runs), so a manifest of
millions of rows streams. Order is deterministic, which is what lets a re-run of a
killed job skip straight past what is already stored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from origin_id.indexer.errors import InvalidRequest
from origin_id.indexer.pipeline import IngestItem
from origin_id.indexer.store import DEFAULT_COLLECTION

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}


@dataclass
class SourceScan:
    """What ``iter_sources`` will yield, counted without reading any image."""

    items: int = 0
    #: Files inside the given folders that are not images (by suffix), not ingested.
    skipped: list[Path] = field(default_factory=list)


def scan_sources(paths: list[Path]) -> SourceScan:
    """Counts items (for progress bars) and lists skipped files; a path that does not
    exist is an ``InvalidRequest`` before anything is ingested."""
    scan = SourceScan()
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            images = [p for p in files if _is_image(p)]
            scan.items += len(images)
            scan.skipped += [p for p in files if not _is_image(p)]
        elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            scan.items += sum(1 for _ in _rows(path))
        elif path.is_file():
            scan.items += 1
        else:
            raise InvalidRequest(f"{path}: no such file or folder")
    return scan


@dataclass(frozen=True)
class SourceRow:
    """One image to ingest, as plain data (a process on another machine can read it):
    ``location`` is a local path or, from a manifest, a URL that fsspec opens."""

    location: str
    external_id: str = ""
    collection: str = DEFAULT_COLLECTION
    source_uri: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    #: Where it was listed ("manifest.csv:12"), for errors.
    where: str = ""
    #: Set when the row cannot be used; reading it raises this.
    error: str = ""

    def read(self) -> bytes:
        if self.error:
            raise InvalidRequest(self.error)
        return read_location(self.location, self.where)

    def item(self) -> IngestItem:
        return IngestItem(read=self.read, collection=self.collection, external_id=self.external_id,
                          source_uri=self.source_uri, labels=dict(self.labels))


def iter_sources(paths: list[Path], collection: str = DEFAULT_COLLECTION,
                 allow_any_path: bool = False) -> Iterator[IngestItem]:
    return (row.item() for row in iter_source_rows(paths, collection, allow_any_path))


def iter_source_rows(paths: list[Path], collection: str = DEFAULT_COLLECTION,
                     allow_any_path: bool = False) -> Iterator[SourceRow]:
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if _is_image(p) and p.is_file()):
                yield _file_row(file, file.relative_to(path).as_posix(), collection)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from iter_manifest(path, collection, allow_any_path)
        elif path.is_file():
            yield _file_row(path, path.name, collection)
        else:
            raise InvalidRequest(f"{path}: no such file or folder")


def iter_manifest(manifest: Path, collection: str = DEFAULT_COLLECTION,
                  allow_any_path: bool = False) -> Iterator[SourceRow]:
    base = manifest.parent
    home = base.resolve()
    for line_no, row in _rows(manifest):
        where = f"{manifest}:{line_no}"
        if isinstance(row, InvalidRequest):
            yield SourceRow("", collection=collection, where=where, error=str(row))
            continue
        if not row.get("path"):
            yield SourceRow("", collection=collection, where=where, error=f"{where}: row has no 'path'")
            continue
        location = str(row["path"])
        remote = "://" in location and not location.startswith("file://")
        if remote:
            if not allow_any_path:
                yield SourceRow("", collection=collection, where=where, error=(
                    f"{where}: a URL is read only with --allow-any-path"))
                continue
        else:
            path = Path(location.removeprefix("file://"))
            path = path if path.is_absolute() else base / path
            if not allow_any_path and not path.resolve().is_relative_to(home):
                yield SourceRow("", collection=collection, where=where, error=(
                    f"{where}: the path leads outside the manifest's folder (allow it with --allow-any-path)"))
                continue
            location = str(path)
        labels = row.get("labels") or {}
        if isinstance(labels, str):
            try:
                labels = json.loads(labels)
            except json.JSONDecodeError as exc:
                yield SourceRow("", collection=collection, where=where, error=f"{where}: labels is not JSON: {exc}")
                continue
        if not isinstance(labels, dict):
            yield SourceRow("", collection=collection, where=where, error=f"{where}: labels must be an object")
            continue
        labels = {**labels, **{k[6:]: v for k, v in row.items() if k.startswith("label.") and v}}
        name = location.rstrip("/").rsplit("/", 1)[-1]
        yield SourceRow(location, str(row.get("external_id") or name), str(row.get("collection") or collection),
                        str(row.get("source_uri") or (location if remote else Path(location).resolve().as_uri())),
                        {str(k): str(v) for k, v in labels.items()}, where)


def read_location(location: str, where: str = "") -> bytes:
    """The bytes at a local path or (through fsspec, with its protocol's package) a URL."""
    prefix = f"{where}: " if where else ""
    try:
        if "://" in location and not location.startswith("file://"):
            import fsspec

            with fsspec.open(location, "rb") as f:
                return f.read()
        return Path(location.removeprefix("file://")).read_bytes()
    except (OSError, ValueError, ImportError) as exc:
        raise InvalidRequest(f"{prefix}cannot read {location[:200]}: {getattr(exc, 'strerror', None) or exc}") \
            from None


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _file_row(path: Path, external_id: str, collection: str) -> SourceRow:
    return SourceRow(str(path), external_id, collection, path.resolve().as_uri())


def _rows(manifest: Path) -> Iterator[tuple[int, dict | InvalidRequest]]:
    """(line number, row) pairs; a JSONL line that is not a JSON object is yielded as its error."""
    with open(manifest, newline="", encoding="utf-8") as f:
        if manifest.suffix.lower() == ".csv":
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield i, row
        else:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield i, InvalidRequest(f"{manifest}:{i}: not JSON: {exc}")
                    continue
                yield i, row if isinstance(row, dict) else InvalidRequest(f"{manifest}:{i}: not a JSON object")
