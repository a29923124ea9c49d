"""API keys: who may call, which role each call needs, which collections a key sees."""

import grpc
import pytest

from origin_id.indexer.config import Settings
from origin_id.server import auth
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.app import OriginServer, check_exposure
from origin_id.server.client import OriginClient
from tests.conftest import with_settings
from tests.server.test_servicer import expect_status


@pytest.fixture
def secured(settings, origin):
    """A server with API keys required, and a key maker."""
    server = OriginServer(with_settings(settings, auth="on"), origin=origin)
    server.start()
    assert server.loaded.wait(60)
    yield server
    server.stop(grace=1)


def connect(server, key="", **kwargs):
    return OriginClient(f"127.0.0.1:{server.port}", max_message_mib=64, timeout=60, api_key=key, **kwargs)


def make_key(origin, role, collection):
    return origin.keys.create(role, collection, name=f"{role}-{collection or 'all'}")[1]


def test_every_call_needs_a_known_key_and_health_stays_open(secured, images):
    with connect(secured) as anonymous, connect(secured, "oid_not-a-real-key") as unknown:
        assert anonymous.health_status() == "SERVING"
        for client in (anonymous, unknown):
            for call, args in [(client.identify, (images[0],)), (client.add, (images[0],)), (client.get, (1,)),
                               (client.list, ()), (client.delete, (1,)), (client.stats, ())]:
                expect_status(grpc.StatusCode.UNAUTHENTICATED, call, *args)
            with pytest.raises(grpc.RpcError) as info:
                list(client.add_many([pb.AddReferenceRequest(image=images[0])]))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bad_scheme = connect(secured)
    bad_scheme.metadata = (("authorization", "Basic abc"),)
    expect_status(grpc.StatusCode.UNAUTHENTICATED, bad_scheme.stats, match="Bearer")
    bad_scheme.close()


def test_roles_and_collections(secured, origin, images):
    admin_all = make_key(origin, "admin", None)
    writer_a = make_key(origin, "write", "a")
    reader_a = make_key(origin, "read", "a")
    with connect(secured, admin_all) as admin, connect(secured, writer_a) as writer, \
            connect(secured, reader_a) as reader:
        in_b = admin.add(images[1], collection="b", external_id="b1").reference
        in_a = writer.add(images[0], collection="a", external_id="a1").reference
        with pytest.raises(grpc.RpcError) as info:
            writer.add(images[2], collection="b")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A read key cannot add or delete, nor see another collection.
        with pytest.raises(grpc.RpcError) as info:
            reader.add(images[3], collection="a")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        expect_status(grpc.StatusCode.PERMISSION_DENIED, reader.delete, in_a.id, match="role")
        expect_status(grpc.StatusCode.PERMISSION_DENIED, writer.delete, in_a.id, match="role")
        expect_status(grpc.StatusCode.PERMISSION_DENIED, reader.identify, images[1], 3, "b")
        expect_status(grpc.StatusCode.NOT_FOUND, reader.get, in_b.id)  # ids cannot be walked
        expect_status(grpc.StatusCode.PERMISSION_DENIED, reader.get, 0, "b", "b1")
        expect_status(grpc.StatusCode.PERMISSION_DENIED, reader.list, "b")
        # Without a collection, a query searches only what the key may read.
        found = reader.identify(images[1], top_k=5)
        assert [c.reference.collection for c in found.candidates] == ["a"]
        assert {c.reference.collection for c in admin.identify(images[1], top_k=5).candidates} == {"a", "b"}
        assert [r.id for r in reader.list().references] == [in_a.id]
        assert [c.name for c in reader.stats().collections] == ["a"]
        assert reader.get(in_a.id).external_id == "a1"
        # A bulk stream: an item for a collection the key may not write is that item's error.
        stream = [pb.AddReferenceRequest(image=images[4], collection="a"),
                  pb.AddReferenceRequest(image=images[5], collection="b"),
                  pb.AddReferenceRequest(image=images[6], collection="a")]
        replies = list(writer.add_many(stream))
        assert [r.HasField("error") for r in replies] == [False, True, False]
        assert replies[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert admin.delete(in_b.id).id == in_b.id


def test_a_revoked_key_stops_working(secured, origin, images, monkeypatch):
    monkeypatch.setattr(auth, "CACHE_S", 0.0)
    record, key = origin.keys.create("read", None)
    with connect(secured, key) as client:
        assert client.stats().references == 0
        origin.keys.revoke(record.id)
        expect_status(grpc.StatusCode.UNAUTHENTICATED, client.stats, match="revoked")


def test_a_rate_limited_key_is_refused_at_once_beyond_its_rate(secured, origin):
    _, key = origin.keys.create("read", None, rate_limit=1.0)
    with connect(secured, key) as client:
        codes = []
        for _ in range(5):
            try:
                client.stats()
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        assert codes[:2] == ["OK", "OK"] and "RESOURCE_EXHAUSTED" in codes[2:]


def test_a_server_on_the_network_needs_keys_or_tls_or_an_explicit_insecure():
    base = Settings.from_env({})
    with pytest.raises(ValueError, match="plaintext without API keys"):
        check_exposure(with_settings(base, host="0.0.0.0", auth="off"))
    check_exposure(with_settings(base, host="0.0.0.0", auth="off", insecure=True))
    check_exposure(with_settings(base, host="0.0.0.0"))  # auto: keys required off loopback
    assert auth.Authenticator(False).authenticate(()) is auth.ANONYMOUS
    from origin_id.server.app import auth_required
    assert auth_required(with_settings(base, host="10.1.2.3")) and not auth_required(base)
    with pytest.raises(ValueError, match="needs both"):
        check_exposure(with_settings(base, tls_cert="/x.pem"))


def test_the_keys_command_prints_a_key_once_and_lists_and_revokes(settings, capsys):
    from origin_id.server.cli import main

    where = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url]
    assert main(["keys", "create", "--role", "write", "--collection", "news", "--name", "desk", *where]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("oid_") and "shown once" in err
    assert main(["keys", "create", "--role", "read", *where]) == 2
    assert "--all-collections" in capsys.readouterr().err
    assert main(["keys", "list", *where]) == 0
    listing = capsys.readouterr().out
    assert "desk" in listing and "news" in listing and key not in listing
    key_id = listing.splitlines()[1].split()[0]
    assert main(["keys", "revoke", key_id, *where]) == 0
    assert f"revoked key {key_id}" in capsys.readouterr().out
    assert main(["keys", "revoke", key_id, *where]) == 2
    assert "no active key" in capsys.readouterr().err
