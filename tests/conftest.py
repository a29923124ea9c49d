"""Shared fixtures: a real PostgreSQL, the real bundled models, real images.

The tests mirror the code: ``tests/<package>/test_<module>.py``. Those of the research
folders (``tests/training``, ``tests/bench``), and the fault tests that stop processes
(``tests/server/test_faults.py``), are the slow suite (``make test-slow``); ``make test``
runs the rest.

* ``postgres_cluster``: one embedded PostgreSQL for the session (or the server
  named by ``TEST_DATABASE_URL``); ``database_url`` gives each test its own
  fresh database on it, migrated by the code under test.
* ``bundle``: the bundled default models, loaded once (as the server does).
* ``images``: a small set of distinct reference images as encoded bytes.
* ``origin`` / ``grpc_server`` / ``client``: an ``OriginIndex`` on a fresh
  database, served by a real gRPC server on a loopback port.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from PIL import Image
from sqlalchemy.engine import make_url

from origin_id.indexer.config import Settings
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.origin_index import OriginIndex
from origin_id.indexer.store.embedded import EmbeddedPostgres
from training.data import procedural_image, skimage_images

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

TESTS = Path(__file__).resolve().parent
SLOW_FOLDERS = ("training", "bench")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if Path(item.fspath).resolve().relative_to(TESTS).parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


def encode(im: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format=fmt, **({"quality": 90} | kwargs if fmt == "JPEG" else kwargs))
    return buf.getvalue()


def traversable_tmpdir() -> Path:
    """A fresh directory that PostgreSQL's unprivileged user may enter (pytest's are 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="origin-id-test-"))
    path.chmod(0o755)
    return path


@pytest.fixture
def open_tmp_path():
    path = traversable_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A PostgreSQL server for the tests: ``admin_url`` makes databases; ``app_url`` (None for
    an external server) is the role the service connects as, which owns them."""

    admin_url: str
    app_url: str | None = None


@pytest.fixture(scope="session")
def postgres_cluster():
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield Cluster(external)
        return
    root = traversable_tmpdir()
    pg = EmbeddedPostgres(root / "postgres")
    pg.start()
    yield Cluster(pg.admin_url, pg.url)
    pg.stop(force=True)
    shutil.rmtree(root, ignore_errors=True)


def _admin(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           dbname="postgres", autocommit=True)


@pytest.fixture
def database_url(postgres_cluster):
    """A fresh database for one test, owned by the service's role."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    owner = make_url(postgres_cluster.app_url).username if postgres_cluster.app_url else None
    with _admin(postgres_cluster.admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
    yield make_url(postgres_cluster.app_url or postgres_cluster.admin_url).set(database=name).render_as_string(
        hide_password=False)
    with _admin(postgres_cluster.admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def bundle() -> ModelBundle:
    return ModelBundle.load(Settings.from_env({}))


def skimage_photos(min_side: int, modes: tuple[str, ...] | None = None) -> list[Image.Image]:
    """scikit-image's sample images with both sides >= min_side (optionally of these modes), as RGB."""
    ims = []
    for path in skimage_images():
        try:
            with Image.open(path) as im:
                if min(im.size) >= min_side and (modes is None or im.mode in modes):
                    ims.append(im.convert("RGB"))
        except OSError:
            continue
    return ims


@pytest.fixture(scope="session")
def reference_images() -> list[Image.Image]:
    """Distinct images: scikit-image photographs and procedural scenes."""
    return skimage_photos(128) + [procedural_image(50_000 + i, size=320) for i in range(8)]


@pytest.fixture(scope="session")
def images(reference_images) -> list[bytes]:
    return [encode(im) for im in reference_images]


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path / "data", database_url=database_url, port=0,
                             max_message_mib=4, index_sync_interval_s=0.5)


@pytest.fixture
def origin(settings, bundle):
    index = OriginIndex.open(settings, bundle=bundle)
    yield index
    index.close()


@pytest.fixture
def grpc_server(settings, origin):
    from origin_id.server.app import OriginServer

    server = OriginServer(settings, origin=origin)
    server.start()
    assert server.loaded.wait(60)
    yield server
    server.stop(grace=1)


@pytest.fixture
def client(grpc_server):
    from origin_id.server.client import OriginClient

    with OriginClient(f"127.0.0.1:{grpc_server.port}", max_message_mib=64, timeout=60) as c:
        c.wait_until_serving(timeout=30)
        yield c


def with_settings(settings: Settings, **changes) -> Settings:
    return dataclasses.replace(settings, **changes)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
