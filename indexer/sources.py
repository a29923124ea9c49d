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


def iter_sources(paths: list[Path], collection: str = DEFAULT_COLLECTION,
                 allow_any_path: bool = False) -> Iterator[IngestItem]:
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if _is_image(p) and p.is_file()):
                yield _file_item(file, file.relative_to(path).as_posix(), collection)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from iter_manifest(path, collection, allow_any_path)
        elif path.is_file():
            yield _file_item(path, path.name, collection)
        else:
            raise InvalidRequest(f"{path}: no such file or folder")


def iter_manifest(manifest: Path, collection: str = DEFAULT_COLLECTION,
                  allow_any_path: bool = False) -> Iterator[IngestItem]:
    base = manifest.parent
    home = base.resolve()
    for line_no, row in _rows(manifest):
        where = f"{manifest}:{line_no}"
        if isinstance(row, InvalidRequest):
            yield _failed_item(str(row), collection)
            continue
        if not row.get("path"):
            yield _failed_item(f"{where}: row has no 'path'", collection)
            continue
        path = Path(str(row["path"]))
        path = path if path.is_absolute() else base / path
        if not allow_any_path and not path.resolve().is_relative_to(home):
            yield _failed_item(f"{where}: the path leads outside the manifest's folder (allow it with "
                               f"--allow-any-path)", collection)
            continue
        labels = row.get("labels") or {}
        if isinstance(labels, str):
            try:
                labels = json.loads(labels)
            except json.JSONDecodeError as exc:
                yield _failed_item(f"{where}: labels is not JSON: {exc}", collection, str(path))
                continue
        if not isinstance(labels, dict):
            yield _failed_item(f"{where}: labels must be an object", collection, str(path))
            continue
        labels = {**labels, **{k[6:]: v for k, v in row.items() if k.startswith("label.") and v}}
        extra = {"source_uri": str(row["source_uri"])} if row.get("source_uri") else {}
        yield _file_item(path, str(row.get("external_id") or path.name), str(row.get("collection") or collection),
                         where=where, labels={str(k): str(v) for k, v in labels.items()}, **extra)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _file_item(path: Path, external_id: str, collection: str, where: str = "", **extra) -> IngestItem:
    extra.setdefault("source_uri", path.resolve().as_uri())
    return IngestItem(read=lambda: _read(path, where), collection=collection, external_id=external_id, **extra)


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"{where + ': ' if where else ''}cannot read {path}: {exc.strerror or exc}") from None


def _failed_item(message: str, collection: str, source_uri: str = "") -> IngestItem:
    def read() -> bytes:
        raise InvalidRequest(message)
    return IngestItem(read=read, collection=collection, source_uri=source_uri)


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
