"""Fetch the Debian wallpaper packages the project may train on.

    python -m training.fetch_data [--data-dir .data/train]

Runs ``apt-get download`` (works unprivileged) and unpacks each package with
``dpkg -x`` under ``DATA_DIR/debian``. Nothing here is committed.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from training.data import DEFAULT_DATA_DIR

PACKAGES = ["gnome-backgrounds", "mate-backgrounds", "sway-backgrounds", "desktop-base"]


def fetch(data_dir: Path) -> Path:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args()
    print(fetch(args.data_dir))


if __name__ == "__main__":
    main()
