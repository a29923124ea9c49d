"""Faults a deployment meets: PostgreSQL killed under a serving server, a full disk. The
server is a separate ``origin-id serve`` process on its own embedded cluster, as deployed.
They take a while, so they run in the slow suite."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.client import OriginClient
from tests.conftest import traversable_tmpdir
from tests.server.test_cli import ENV, cli, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def served(request):
    """``origin-id serve`` on a data directory of its own (under ``request.param`` when given)."""
    root = getattr(request, "param", None) or traversable_tmpdir()
    port = free_port()
    proc = subprocess.Popen(cli("serve", "--port", str(port), "--data-dir", str(Path(root) / "data"),
                                "--db-check-interval-s", "0.25"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    client = OriginClient(f"127.0.0.1:{port}", timeout=30)
    client.wait_until_serving(timeout=240)
    yield client, Path(root) / "data"
    client.close()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "cluster" / "postmaster.pid").read_text().splitlines()[0])


def test_postgres_killed_under_load_is_unavailable_then_serving_again_without_a_restart(served, images):
    client, data_dir = served
    for data in images[:4]:
        client.add(data)
    codes: list[tuple[float, float, str]] = []  # (start, end, status) of each call
    stop = threading.Event()

    def load() -> None:  # a client querying all along
        while not stop.is_set():
            start = time.monotonic()
            try:
                client.identify(images[1], top_k=2)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            codes.append((start, time.monotonic(), code))
    threading.Thread(target=load, daemon=True).start()
    time.sleep(1.0)
    killed = time.monotonic()
    os.kill(postmaster_pid(data_dir), signal.SIGKILL)
    statuses = []
    while time.monotonic() - killed < 60:
        try:
            statuses.append((time.monotonic() - killed, client.health_status()))
        except grpc.RpcError as exc:
            statuses.append((time.monotonic() - killed, exc.code().name))
        if statuses[-1][1] == "SERVING" and any(s == "NOT_SERVING" for _, s in statuses):
            break
        time.sleep(0.05)
    stop.set()
    time.sleep(0.5)
    after = [(end - killed, code) for _, end, code in codes if end >= killed]
    unavailable = [t for t, code in after if code == "UNAVAILABLE"]
    # Within a second of the client being free to ask: a query in flight at the kill may
    # take longer than that on a loaded host before its own answer comes back.
    free = max([end - killed for start, end, _ in codes if start < killed <= end], default=0.0)
    assert unavailable and unavailable[0] <= free + 1.0, (free, after[:10])
    assert {code for _, code in after} <= {"OK", "UNAVAILABLE"}, {code for _, code in after}
    down = next(t for t, s in statuses if s == "NOT_SERVING")
    back = next(t for t, s in statuses if s == "SERVING" and t > down)
    assert down <= 1.5 and back <= 30, statuses[-5:]
    reply = client.identify(images[1], top_k=2)  # no restart of the server, nothing lost
    assert reply.match and client.stats().references == 4
    assert postmaster_pid(data_dir) > 0


def _small_filesystem() -> Path:
    """A 96 MB tmpfs (the cluster takes about 40), or a skip where mounting is not allowed."""
    where = traversable_tmpdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0755", "tmpfs", str(where)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mount.stderr.strip()}")
    return where


@pytest.fixture
def small_disk():
    where = _small_filesystem()
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_fails_items_not_streams_and_the_server_recovers(small_disk, images):
    port = free_port()
    proc = subprocess.Popen(cli("serve", "--port", str(port), "--data-dir", str(small_disk / "data"),
                                "--db-check-interval-s", "0.25"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        with OriginClient(f"127.0.0.1:{port}", timeout=60) as client:
            client.wait_until_serving(timeout=240)
            filler = small_disk / "filler"
            with open(filler, "wb") as f:  # every free byte
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                except OSError:
                    pass
            labels = {f"k{i}": "v" * 1000 for i in range(60)}  # ~60 KB of labels per reference
            stream = [pb.AddReferenceRequest(image=data, labels=labels) for data in images[:8]]
            replies = list(client.add_many(stream, timeout=120))
            assert len(replies) == 8  # the stream ran to its end: one answer per item
            codes = {r.error.code for r in replies if r.HasField("error")}
            assert codes, "nothing failed: the disk was not full"
            assert codes <= {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.INVALID_ARGUMENT.value[0]}
            filler.unlink()
            deadline = time.monotonic() + 60
            while True:  # space again: the server serves again, and the refused items go in
                try:
                    if client.health_status() == "SERVING":
                        again = list(client.add_many(stream, timeout=120))
                        if not any(r.HasField("error") for r in again):
                            break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "no recovery after the disk had space again"
                time.sleep(0.5)
            assert client.stats().references == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
