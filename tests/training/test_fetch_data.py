"""Training data sources: pinned Debian releases fetched from a mirror, and the order photos are listed in.

The mirror is a real HTTP server on a loopback port serving a real ``.deb`` built with
``dpkg-deb``; ``fetch_release`` downloads, checks and unpacks it with ``dpkg -x``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import RELEASES_DIR, allowed_photo_sets, allowed_photos, procedural_image
from training.fetch_data import RELEASES, Release, fetch_release

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def build_deb(root: Path, name: str, files: dict[str, Image.Image]) -> Path:
    """A minimal binary package holding ``files`` (path -> image) as PNGs."""
    tree = root / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        "Description: test wallpapers\n")
    for rel, im in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path)
    deb = root / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.fixture
def mirror(tmp_path):
    """(base URL, served directory) of an HTTP server on loopback."""
    served = tmp_path / "mirror"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def release_for(deb: Path, served: Path, sha256: str | None = None) -> Release:
    """A release of ``deb`` (package test-backgrounds 1.0), put where the mirror keeps it."""
    release = Release("test-backgrounds", "1.0", "testing", sha256 or hashlib.sha256(deb.read_bytes()).hexdigest())
    (served / release.pool_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(deb, served / release.pool_path)
    return release


def test_a_pinned_release_is_downloaded_checked_and_unpacked(tmp_path, mirror):
    url, served = mirror
    deb = build_deb(tmp_path, "test-backgrounds", {"usr/share/backgrounds/a.png": procedural_image(1, 160)})
    release = release_for(deb, served)
    data_dir = tmp_path / "data"
    target = fetch_release(release, data_dir, url)
    assert target == data_dir / RELEASES_DIR / "test-backgrounds_1.0"
    unpacked = target / "usr/share/backgrounds/a.png"
    assert np.array_equal(np.asarray(Image.open(unpacked)), np.asarray(procedural_image(1, 160)))
    assert (target / ".complete").exists()
    # Done once: a second call does not download again (the mirror no longer has it).
    (served / release.pool_path).unlink()
    assert fetch_release(release, data_dir, url) == target


def test_a_download_with_the_wrong_digest_is_refused_and_unpacks_nothing(tmp_path, mirror):
    url, served = mirror
    deb = build_deb(tmp_path, "test-backgrounds", {"usr/share/backgrounds/a.png": procedural_image(1, 160)})
    release = release_for(deb, served, sha256="0" * 64)
    with pytest.raises(RuntimeError, match="SHA-256"):
        fetch_release(release, tmp_path / "data", url)
    assert not (tmp_path / "data" / RELEASES_DIR).exists()


def test_a_release_gone_from_the_mirror_is_skipped_with_a_warning(tmp_path, mirror, capsys):
    url, _ = mirror
    gone = Release("test-backgrounds", "0.9", "testing", "0" * 64)
    assert fetch_release(gone, tmp_path / "data", url) is None
    assert "no longer on" in capsys.readouterr().err
    assert not (tmp_path / "data" / RELEASES_DIR).exists()


def test_the_pinned_releases_are_distinct_and_fully_named():
    assert len({(r.package, r.version) for r in RELEASES}) == len(RELEASES)
    for r in RELEASES:
        assert len(r.sha256) == 64
    assert RELEASES[0].pool_path == "pool/main/g/gnome-backgrounds/gnome-backgrounds_3.38.0-1_all.deb"


def test_other_releases_come_last_and_never_displace_a_first_set_photo(tmp_path):
    """The first set keeps its copy of a shared wallpaper (so its photos and their splits do not
    change); a release's own new wallpaper (JPEG XL, as GNOME ships them) is added after everything else."""
    shared, new = procedural_image(11, 400), procedural_image(12, 400)
    first = tmp_path / "debian" / "usr/share/backgrounds"
    first.mkdir(parents=True)
    shared.save(first / "shared.png")
    other = tmp_path / RELEASES_DIR / "x_2.0" / "usr/share/backgrounds"
    other.mkdir(parents=True)
    shared.resize((300, 300)).save(other / "a-shared-smaller.png")  # listed first in its folder
    new.save(other / "new.jxl", lossless=True)
    without = allowed_photos(tmp_path, max_side=None)
    sets = allowed_photo_sets(tmp_path, max_side=None)
    assert len(sets["other releases"]) == 1 and np.array_equal(np.asarray(sets["other releases"][0]), np.asarray(new))
    (tmp_path / RELEASES_DIR).rename(tmp_path / "elsewhere")
    base = allowed_photos(tmp_path, max_side=None)
    assert len(without) == len(base) + 1
    assert [np.asarray(a).tobytes() for a in without[:-1]] == [np.asarray(b).tobytes() for b in base]
    assert np.array_equal(np.asarray(without[-1]), np.asarray(new))
    assert any(im.size == (400, 400) and np.array_equal(np.asarray(im), np.asarray(shared)) for im in base)
    assert [np.asarray(a).tobytes() for a in sets["first set"]] == [np.asarray(b).tobytes() for b in base]
