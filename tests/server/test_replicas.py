"""Replicas: several servers on one PostgreSQL, each with its own index, behind any load
balancer. A write through one is found through the other within the sync interval."""

import time

from origin_id.indexer.origin_index import OriginIndex
from origin_id.server.app import OriginServer
from origin_id.server.client import OriginClient
from tests.conftest import with_settings


def test_a_write_through_one_replica_is_found_through_the_other(settings, bundle, images, tmp_path):
    servers, clients = [], []
    try:
        for name in ("a", "b"):
            replica = with_settings(settings, data_dir=tmp_path / name, index_sync_interval_s=0.5)
            origin = OriginIndex.open(replica, bundle=bundle)
            origin.start_maintenance()
            server = OriginServer(replica, origin=origin)
            server.start()
            assert server.loaded.wait(60)
            servers.append((server, origin))
            clients.append(OriginClient(f"127.0.0.1:{server.port}", timeout=60))
        a, b = clients
        added = a.add(images[2], external_id="via-a").reference
        per_reference = 1 + len(settings.region_layout)  # the image and its regions
        start = time.monotonic()
        while time.monotonic() - start < 10:
            if b.stats().indexed_vectors == per_reference:
                break
            time.sleep(0.1)
        found_after = time.monotonic() - start
        answer = b.identify(images[2], top_k=1)
        assert answer.match and answer.candidates[0].reference.id == added.id
        assert found_after <= 3.0, found_after
        b.delete(added.id)  # and a delete through the other, the way back
        start = time.monotonic()
        while a.stats().indexed_vectors and time.monotonic() - start < 10:
            time.sleep(0.1)
        assert a.stats().indexed_vectors == 0
    finally:
        for client in clients:
            client.close()
        for server, origin in servers:
            server.stop(grace=1)
            origin.close()
