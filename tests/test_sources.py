import json

import pytest
from PIL import Image

from indexer.errors import InvalidRequest
from indexer.sources import count_sources, iter_sources


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ["b.png", "a.jpg", "sub/c.webp"]:
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_is_walked_in_sorted_order_with_relative_ids(folder):
    items = list(iter_sources([folder / "imgs"], collection="news"))
    assert count_sources([folder / "imgs"]) == 3
    assert [i.external_id for i in items] == ["a.jpg", "b.png", "sub/c.webp"]
    assert all(i.collection == "news" and i.source_uri.startswith("file://") for i in items)
    assert items[0].read()[:2] == b"\xff\xd8"


def test_csv_manifest_with_labels(folder):
    manifest = folder / "m.csv"
    manifest.write_text('path,external_id,labels,label.owner\nimgs/a.jpg,A1,"{""year"": 2024}",AP\n'
                        "imgs/b.png,,,\n")
    items = list(iter_sources([manifest]))
    assert count_sources([manifest, folder / "imgs" / "a.jpg"]) == 3
    assert [i.external_id for i in items] == ["A1", "b.png"]
    assert items[0].labels == {"year": "2024", "owner": "AP"}


def test_jsonl_manifest_and_errors(folder):
    manifest = folder / "m.jsonl"
    manifest.write_text(json.dumps({"path": "imgs/a.jpg", "collection": "x", "source_uri": "https://e/a"}) + "\n")
    (item,) = iter_sources([manifest])
    assert (item.collection, item.source_uri) == ("x", "https://e/a")
    manifest.write_text("{broken\n")
    with pytest.raises(InvalidRequest, match=r"m\.jsonl:1"):
        list(iter_sources([manifest]))
    with pytest.raises(InvalidRequest, match="no such file"):
        list(iter_sources([folder / "missing.png"]))
