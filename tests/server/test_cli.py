"""The command line as users run it: separate processes on the embedded default."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from PIL import Image

from origin_id.server.client import OriginClient
from tests.conftest import encode
from training.data import procedural_image
from training.edits import apply

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "GRPC_ENABLE_FORK_SUPPORT": "false"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "origin_id.server.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def image_folder(open_tmp_path):
    folder = open_tmp_path / "refs"
    folder.mkdir()
    for i in range(48):
        procedural_image(70_000 + i, size=256).save(folder / f"p{i:03d}.png")
    return folder


def run(*args, timeout=300, check=True):
    proc = subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=Path(__file__).resolve().parent.parent)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_killed_ingest_resumes_without_duplicates(image_folder, open_tmp_path):
    data_dir = open_tmp_path / "data"
    proc = subprocess.Popen(cli("ingest", str(image_folder), "--data-dir", str(data_dir), "--batch-size", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            cwd=Path(__file__).resolve().parent.parent)
    # Kill it hard once some batches have committed (the progress bar says so).
    seen = ""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        chunk = proc.stderr.read(100)
        seen += chunk
        done = [int(n) for n in re.findall(r"(\d+)/48", seen)]
        if (done and max(done) >= 8) or not chunk:
            break
    proc.kill()
    proc.wait()
    assert "/48" in seen, seen[-2000:]
    second = run("ingest", str(image_folder), "--data-dir", str(data_dir))
    assert "ingested 48 images" in second.stdout
    created = int(second.stdout.split(":")[1].split("new")[0])
    assert 0 < created < 48, second.stdout  # some were done by the killed run
    third = run("ingest", str(image_folder), "--data-dir", str(data_dir))
    assert "0 new, 48 already present, 0 failed" in third.stdout
    # The cluster the killed run left behind was adopted and stopped: none runs now.
    assert not (data_dir / "postgres" / "cluster" / "postmaster.pid").exists()
    # Query locally: an edited copy finds its origin.
    query = open_tmp_path / "q.jpg"
    apply("tone", Image.open(image_folder / "p007.png").convert("RGB"), seed=1).save(query)
    answer = run("query", str(query), "--data-dir", str(data_dir), "--json")
    assert '"external_id": "p007.png"' in answer.stdout.split('"candidates"')[1].split("}")[0]
    # The inpainting verdict comes with it; the mask is written to a file when one was computed.
    verdict = answer.stdout.split('"inpainting"')[1]
    assert '"available": true' in verdict and "mask_png" not in verdict
    mask = open_tmp_path / "mask.png"
    table = run("query", str(query), "--data-dir", str(data_dir), "--mask-out", str(mask))
    assert "inpainting:" in table.stdout
    assert mask.exists() == ('"localized": true' in verdict)


def test_serve_health_query_and_sigterm(image_folder, open_tmp_path):
    port = free_port()
    data_dir = open_tmp_path / "served"
    server = subprocess.Popen(cli("serve", "--port", str(port), "--data-dir", str(data_dir)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        # The port is bound (and this line printed) before the models and index load.
        for line in server.stdout:
            if "origin-id serving on" in line:
                break
        statuses = []
        with OriginClient(f"127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                try:
                    status = client.health_status()
                except grpc.RpcError:
                    time.sleep(0.05)
                    continue
                if not statuses or statuses[-1] != status:
                    statuses.append(status)
                if status == "SERVING":
                    break
                time.sleep(0.05)
            assert statuses == ["NOT_SERVING", "SERVING"], statuses
            ingest = run("ingest", str(image_folder), "--server", f"127.0.0.1:{port}", "--collection", "c1")
            assert "48 new" in ingest.stdout
            edited = apply("restyle", Image.open(image_folder / "p020.png").convert("RGB"), seed=3)
            reply = client.identify(encode(edited), top_k=3)
            assert reply.candidates[0].reference.external_id == "p020.png"
            table = run("query", str(image_folder / "p021.png"), "--server", f"127.0.0.1:{port}")
            assert "MATCH" in table.stdout and "p021.png" in table.stdout.splitlines()[2]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        log = server.stdout.read()
        assert "SIGTERM received" in log and "stopped" in log
        index_files = list((data_dir / "index").glob("*.faiss"))
        assert len(index_files) == 1  # checkpointed on the way out
    finally:
        if server.poll() is None:
            server.kill()
    # The embedded cluster was stopped with the server: a fresh start works from disk.
    again = run("db", "current", "--data-dir", str(data_dir))
    assert "revision 0001" in again.stdout
