"""Fetch the Debian wallpaper packages the project may train on.

    python -m training.fetch_data [--data-dir .data/train]

Two sets, both unpacked with ``dpkg -x`` and never committed:

* ``DATA_DIR/debian``: the four packages as this machine's apt sources carry
  them (``apt-get download``, works unprivileged; Debian 12 here);
* ``DATA_DIR/debian-releases/<package>_<version>``: the releases of the same
  packages in Debian's other suites whose wallpapers differ (``RELEASES``, pinned
  by version and SHA-256, downloaded from ``MIRROR``'s pool). GNOME replaces its
  wallpapers with every release: 3.38 (Debian 11) has photographs, 48 and 51 have
  renders. Together they add 59 distinct images to the 68 of the first set (the
  mate and sway releases, and desktop-base 14, add none: left out). A release
  that has left the mirror is skipped with a warning; the images it would have
  added are then missing, and the cache names of ``training.data.photo_set_digest``
  tell the two sets apart.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from training.data import DEFAULT_DATA_DIR, RELEASES_DIR

PACKAGES = ["gnome-backgrounds", "mate-backgrounds", "sway-backgrounds", "desktop-base"]
MIRROR = "http://deb.debian.org/debian"


class Release(NamedTuple):
    package: str
    version: str
    suite: str
    sha256: str

    @property
    def pool_path(self) -> str:
        """Where the mirror keeps it (these packages' source names are their own)."""
        return f"pool/main/{self.package[0]}/{self.package}/{self.package}_{self.version}_all.deb"


RELEASES = [
    Release("gnome-backgrounds", "3.38.0-1", "bullseye",
            "76d8a4c52e5f346d9cb08bc8a1f58ad443d2bae211721af8a7248457c7a520e8"),
    Release("desktop-base", "11.0.3", "bullseye", "96082921777be7e759fcb31734e245eefab92c31a513e60189df44bf5fe72797"),
    Release("gnome-backgrounds", "48.2.1-1", "trixie",
            "87da6832dbd017540e4295b31330e515ff1ee709359c84556fa8b29be9aada06"),
    Release("desktop-base", "13.0.4", "trixie", "dbcc12beace7044dfc29fcfdf653d8533b13821e5dd9075b5616be5563ee1776"),
    Release("gnome-backgrounds", "51.0.1-1", "forky",
            "9aaf278e9ccbf50767854c6ed886db99fb1d9da9d65fd5806f24441fe90fad54"),
]


def unpack_package(package: str, into: Path) -> Path:
    """One package from the machine's apt sources unpacked under ``into/<package>``, once."""
    root = into / package
    if root.exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob("*.deb")
        root.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def fetch(data_dir: Path) -> Path:
    """The system suite's packages under ``data_dir/debian``."""
    target = data_dir / "debian"
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    (target / ".complete").touch()
    return target


def fetch_release(release: Release, data_dir: Path, mirror: str = MIRROR) -> Path | None:
    """One pinned release under ``data_dir/debian-releases``; None (and a warning) when the
    mirror no longer has it. A download whose SHA-256 differs is an error."""
    target = data_dir / RELEASES_DIR / f"{release.package}_{release.version}"
    if (target / ".complete").exists():
        return target
    url = f"{mirror}/{release.pool_path}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
        print(f"warning: {release.package} {release.version} ({release.suite}) is no longer on {mirror}; "
              "its wallpapers are left out", file=sys.stderr)
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest != release.sha256:
        raise RuntimeError(f"{url}: SHA-256 {digest}, expected {release.sha256}")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        deb = Path(tmp) / Path(release.pool_path).name
        deb.write_bytes(data)
        subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    (target / ".complete").touch()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--mirror", default=MIRROR)
    args = parser.parse_args()
    print(fetch(args.data_dir))
    for release in RELEASES:
        path = fetch_release(release, args.data_dir, args.mirror)
        if path:
            print(path)


if __name__ == "__main__":
    main()
