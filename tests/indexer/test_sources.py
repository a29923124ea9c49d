import json

import pytest
from PIL import Image

from origin_id.indexer.errors import InvalidRequest
from origin_id.indexer.sources import iter_sources, scan_sources


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ["b.png", "a.jpg", "sub/c.webp"]:
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_is_walked_in_sorted_order_with_relative_ids_and_other_files_reported(folder):
    items = list(iter_sources([folder / "imgs"], collection="news"))
    scan = scan_sources([folder / "imgs"])
    assert scan.items == 3 and scan.skipped == [folder / "imgs" / "notes.txt"]
    assert [i.external_id for i in items] == ["a.jpg", "b.png", "sub/c.webp"]
    assert all(i.collection == "news" and i.source_uri.startswith("file://") for i in items)
    assert items[0].read()[:2] == b"\xff\xd8"


def test_csv_manifest_with_labels(folder):
    manifest = folder / "m.csv"
    manifest.write_text('path,external_id,labels,label.owner\nimgs/a.jpg,A1,"{""year"": 2024}",AP\n'
                        "imgs/b.png,,,\n")
    items = list(iter_sources([manifest]))
    assert scan_sources([manifest, folder / "imgs" / "a.jpg"]).items == 3
    assert [i.external_id for i in items] == ["A1", "b.png"]
    assert items[0].labels == {"year": "2024", "owner": "AP"}


def test_a_bad_manifest_row_is_that_rows_error_and_the_rows_around_it_are_read(folder):
    manifest = folder / "m.jsonl"
    rows = [{"path": "imgs/a.jpg", "collection": "x", "source_uri": "https://e/a"}, {"path": "imgs/missing.png"},
            {"external_id": "no path"}, {"path": "imgs/b.png", "labels": "[1]"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n" + json.dumps({"path": "imgs/b.png"}))
    items = list(iter_sources([manifest]))
    assert scan_sources([manifest]).items == 6
    assert (items[0].collection, items[0].source_uri) == ("x", "https://e/a")
    assert items[0].read()[:2] == b"\xff\xd8" and items[5].read()[:4] == b"\x89PNG"
    for item, message in zip(items[1:5], [r"m\.jsonl:2: cannot read .*missing\.png", r"m\.jsonl:3: row has no 'path'",
                                          r"m\.jsonl:4: labels must be an object", r"m\.jsonl:5: not JSON"]):
        with pytest.raises(InvalidRequest, match=message):
            item.read()


def test_a_path_that_does_not_exist_is_refused_before_anything_is_read(folder):
    with pytest.raises(InvalidRequest, match="no such file"):
        scan_sources([folder / "imgs", folder / "missing.png"])
    with pytest.raises(InvalidRequest, match="no such file"):
        list(iter_sources([folder / "missing.png"]))


def test_a_manifest_reads_only_inside_its_folder_unless_allowed(folder, tmp_path):
    secret = tmp_path / "elsewhere" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (8, 8)).save(secret)
    manifests = folder / "manifests"
    manifests.mkdir()
    (manifests / "inside.png").write_bytes(secret.read_bytes())
    (manifests / "link.png").symlink_to(secret)
    manifest = manifests / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"path": p}) for p in
                                  ["inside.png", str(secret), "../elsewhere/secret.png", "link.png"]))
    items = list(iter_sources([manifest]))
    assert items[0].read()[:4] == b"\x89PNG"
    for item in items[1:]:
        with pytest.raises(InvalidRequest, match="outside the manifest's folder") as info:
            item.read()
        assert "secret" not in str(info.value)  # the refused path's contents are never read or shown
    allowed = list(iter_sources([manifest], allow_any_path=True))
    assert all(item.read()[:4] == b"\x89PNG" for item in allowed)
