"""The committed gRPC stubs are what protoc makes from proto/ today."""

import pytest


def test_generated_stubs_match_the_proto(tmp_path, repo_root):
    pytest.importorskip("grpc_tools")
    from origin_id.server.generate_proto import generate

    for path in generate(tmp_path):
        committed = repo_root / "server" / "api" / "origin" / "v1" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run make proto"
