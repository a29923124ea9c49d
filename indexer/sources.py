"""Where images to ingest come from: files, folders, or manifests.

* an image file: itself, ``external_id`` = its file name;
* a folder: every image below it, in sorted order, ``external_id`` = the
  path relative to the folder;
* a manifest, ``.csv`` (header row) or ``.jsonl`` (one object per line), with
  a ``path`` (relative to the manifest's folder, or absolute) and optional
  ``external_id``, ``collection``, ``source_uri`` and ``labels`` (an object,
  or in CSV a JSON string; CSV columns named ``label.KEY`` work too).

Items are produced lazily (bytes are read when their batch runs), so a
manifest of millions of rows streams. Order is deterministic, which is what
lets a re-run of a killed job skip straight past what is already stored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from indexer.errors import InvalidRequest
from indexer.pipeline import IngestItem
from indexer.store import DEFAULT_COLLECTION

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}


def _file_item(path: Path, external_id: str, collection: str, **extra) -> IngestItem:
    extra.setdefault("source_uri", path.resolve().as_uri())
    return IngestItem(read=path.read_bytes, collection=collection, external_id=external_id, **extra)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def iter_sources(paths: list[Path], collection: str = DEFAULT_COLLECTION) -> Iterator[IngestItem]:
    for path in paths:
        if path.is_dir():
            for file in _image_files(path):
                yield _file_item(file, file.relative_to(path).as_posix(), collection)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from iter_manifest(path, collection)
        elif path.is_file():
            yield _file_item(path, path.name, collection)
        else:
            raise InvalidRequest(f"{path}: no such file or folder")


def count_sources(paths: list[Path]) -> int:
    """How many items ``iter_sources`` will yield, without reading any image (for progress bars)."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += len(_image_files(path))
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            total += sum(1 for _ in _rows(path))
        else:
            total += 1
    return total


def iter_manifest(manifest: Path, collection: str = DEFAULT_COLLECTION) -> Iterator[IngestItem]:
    base = manifest.parent
    for line_no, row in _rows(manifest):
        if not row.get("path"):
            raise InvalidRequest(f"{manifest}:{line_no}: row has no 'path'")
        path = Path(row["path"])
        path = path if path.is_absolute() else base / path
        labels = row.get("labels") or {}
        if isinstance(labels, str):
            try:
                labels = json.loads(labels)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{manifest}:{line_no}: labels is not JSON: {exc}") from None
        labels = {**labels, **{k[6:]: v for k, v in row.items() if k.startswith("label.") and v}}
        extra = {"source_uri": row["source_uri"]} if row.get("source_uri") else {}
        yield _file_item(path, row.get("external_id") or path.name, row.get("collection") or collection,
                         labels={str(k): str(v) for k, v in labels.items()}, **extra)


def _rows(manifest: Path) -> Iterator[tuple[int, dict]]:
    with open(manifest, newline="", encoding="utf-8") as f:
        if manifest.suffix.lower() == ".csv":
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield i, row
        else:
            for i, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield i, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InvalidRequest(f"{manifest}:{i}: not JSON: {exc}") from None
