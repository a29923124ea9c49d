"""The command line as users run it: separate processes on the embedded default."""

import json
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


@pytest.mark.slow  # a fault test: two ingest processes and a kill, about a minute
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


@pytest.mark.slow  # a server process's whole life (50 s); the in-process server is tested in the fast suite
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
        saved = list((data_dir / "index").glob("*/state.json"))
        assert len(saved) == 1 and (saved[0].parent / "base.faiss").exists()  # checkpointed on the way out
    finally:
        if server.poll() is None:
            server.kill()
    # The embedded cluster was stopped with the server: a fresh start works from disk.
    again = run("db", "current", "--data-dir", str(data_dir))
    assert re.search(r"revision (\d+) \(head \1\)", again.stdout), again.stdout


def test_client_commands_against_a_running_server(grpc_server, reference_images, open_tmp_path, capsys):
    """ingest, query, stats, list, get and delete as a user types them, with --server."""
    from origin_id.server.cli import main

    server = ["--server", f"127.0.0.1:{grpc_server.port}"]
    folder = open_tmp_path / "refs"
    folder.mkdir()
    for i, im in enumerate(reference_images[:5]):
        im.save(folder / f"r{i}.jpg")
    (folder / "notes.txt").write_text("not an image")
    query = open_tmp_path / "q.jpg"
    reference_images[1].save(query)

    assert main(["query", str(query), *server]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err

    manifest = open_tmp_path / "m.csv"
    manifest.write_text("path,external_id\nrefs/r4.jpg,four\nrefs/gone.jpg,gone\n")
    assert main(["ingest", str(folder), str(manifest), "--collection", "desk", *server]) == 1  # one row failed
    out, err = capsys.readouterr()
    assert "ingested 7 images: 5 new, 1 already present, 1 failed" in out
    assert "skipped 1 files that are not images: " in out and "notes.txt" in out
    assert "m.csv:3: cannot read" in err and "gone.jpg" in err

    assert main(["query", str(query), "--top-k", "2", *server]) == 0
    answer = capsys.readouterr().out
    assert "MATCH" in answer.splitlines()[0] and "r1.jpg" in answer.splitlines()[2]
    assert main(["query", str(query), "--collection", "elsewhere", *server]) == 1
    assert "NOT_FOUND: no collection named 'elsewhere'" in capsys.readouterr().err

    assert main(["stats", *server]) == 0
    table = capsys.readouterr().out
    assert "references       5" in table and "desk" in table
    assert main(["stats", "--json", *server]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["references"] == 5 and stats["collections"] == [{"name": "desk", "references": 5}]

    assert main(["list", "--page-size", "2", *server]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:2] == ["id", "collection"] and len(listing) == 4
    assert listing[-1].startswith("more: origin-id list --page-token ")
    token = listing[-1].split("--page-token ")[1]
    assert main(["list", "--page-token", token, "--all", "--json", *server]) == 0
    pages = [json.loads(page) for page in capsys.readouterr().out.replace("}\n{", "}\x00{").split("\x00")]
    ids = [r["id"] for page in pages for r in page["references"]]
    assert len(ids) == 3 and all(isinstance(i, int) for i in ids)

    assert main(["get", "--external-id", "r2.jpg", "--collection", "desk", *server]) == 0
    shown = capsys.readouterr().out
    assert "external_id    r2.jpg" in shown and "collection     desk" in shown
    ref_id = int(shown.split()[1])
    assert main(["delete", str(ref_id), *server]) == 0
    assert f"deleted reference {ref_id}" in capsys.readouterr().out
    assert main(["get", str(ref_id), *server]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["get", *server]) == 2
    assert "give a reference id" in capsys.readouterr().err


def test_a_command_without_an_index_says_so_and_creates_nothing(open_tmp_path, capsys):
    from origin_id.server.cli import main

    missing = open_tmp_path / "never-ingested"
    image = open_tmp_path / "q.png"
    procedural_image(5, size=64).save(image)
    for command in (["query", str(image)], ["list"], ["stats"], ["get", "1"]):
        assert main([*command, "--data-dir", str(missing)]) == 2
        assert f"no index at {missing}: ingest images first" in capsys.readouterr().err
    assert not missing.exists()


def test_output_into_a_closed_pipe_ends_quietly(client, grpc_server, images):
    """``origin-id list | head -1``: the reader goes away; no BrokenPipeError traceback."""
    for data in images[:4]:
        client.add(data)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    proc = subprocess.run(cli("list", "--server", f"127.0.0.1:{grpc_server.port}"), stdout=write_end,
                          stderr=subprocess.PIPE, text=True, env=ENV, timeout=60)
    os.close(write_end)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_no_command_flag_shadows_a_setting():
    """``Settings.from_args`` reads every argument named like a setting, so a command's own
    flag must not take a setting's name (``ingest --workers`` once set the gRPC pool to 0)."""
    import argparse
    import dataclasses

    from origin_id.indexer.config import Settings
    from origin_id.server.cli import build_parser

    names = {f.name for f in dataclasses.fields(Settings)}
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, parser in subparsers.choices.items():
        for action in parser._actions:
            if action.dest in names:
                assert action.default is None, f"{command} --{action.dest} shadows the setting {action.dest}"
