"""Load: N concurrent clients send mixed identify / add calls to a served index for minutes.

    python -m bench.load --clients 8 --minutes 10

The server is a separate ``origin-id serve`` process on a fresh embedded PostgreSQL, as
deployed, with ``--references`` procedural scenes ingested first. Each client loops: with
probability ``--add-share`` it adds a new scene, otherwise it identifies an edited copy
(re-encoded, cropped, brightened) of a random reference; every call has a deadline. The
server's resident memory is sampled from /proc; its growth is measured from the end of a
warm-up (the first ``--warmup-s``) to the end of the run.

Writes ``bench/results/load.md`` and ``load.json``: calls and p50 / p99 latency per
operation, status codes, and memory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from PIL import Image, ImageEnhance
from tqdm import tqdm

from bench.service import machine
from origin_id.server.api.origin.v1 import origin_pb2 as pb
from origin_id.server.client import OriginClient
from origin_id.server.demo import sample_scene

RESULTS = Path(__file__).resolve().parent / "results"
#: Codes a client under this load may get without anything being wrong.
EXPECTED = {"OK", "RESOURCE_EXHAUSTED"}


def jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def edited(im: Image.Image, rng: random.Random) -> bytes:
    w, h = im.size
    dx, dy = int(w * rng.uniform(0, 0.1)), int(h * rng.uniform(0, 0.1))
    im = im.crop((dx, dy, w - dx, h - dy))
    return jpeg(ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.2)), rng.randint(60, 90))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    def __init__(self, address: str, references: int, add_share: float, deadline_s: float, seed: int):
        self.address, self.references, self.add_share, self.deadline_s = address, references, add_share, deadline_s
        self.next_scene = 10_000_000 + seed * 1_000_000
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {"identify": [], "add": []}
        self.codes: dict[str, Counter] = {"identify": Counter(), "add": Counter()}
        self.originals = [sample_scene(20_000 + i) for i in range(min(references, 200))]

    def new_scene(self) -> bytes:
        with self.lock:
            self.next_scene += 1
            seed = self.next_scene
        return jpeg(sample_scene(seed))

    def client(self, stop: threading.Event, seed: int) -> None:
        rng = random.Random(seed)
        with OriginClient(self.address, timeout=self.deadline_s) as client:
            while not stop.is_set():
                op = "add" if rng.random() < self.add_share else "identify"
                data = self.new_scene() if op == "add" else edited(rng.choice(self.originals), rng)
                start = time.monotonic()
                try:
                    if op == "add":
                        client.add(data, collection="load")
                    else:
                        client.identify(data, top_k=5)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with self.lock:
                    self.latency[op].append(time.monotonic() - start)
                    self.codes[op][code] += 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--references", type=int, default=500)
    p.add_argument("--add-share", type=float, default=0.2)
    p.add_argument("--deadline-s", type=float, default=30.0)
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="origin-id-load-"))
    work.chmod(0o755)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "origin_id.server.cli", "serve", "--data-dir", str(work / "data"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"})
    address = f"127.0.0.1:{port}"
    try:
        with OriginClient(address, timeout=120) as setup:
            setup.wait_until_serving(timeout=600)
            requests = (pb.AddReferenceRequest(image=jpeg(sample_scene(20_000 + i)), collection="load",
                                               external_id=f"r{i}") for i in range(args.references))
            for _ in tqdm(setup.add_many(requests), total=args.references, desc="references", unit="img"):
                pass
        load = Load(address, args.references, args.add_share, args.deadline_s, seed=1)
        stop = threading.Event()
        threads = [threading.Thread(target=load.client, args=(stop, i), daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        started, samples = time.monotonic(), []
        duration = args.minutes * 60
        with tqdm(total=int(duration), desc=f"{args.clients} clients", unit="s") as bar:
            while (elapsed := time.monotonic() - started) < duration:
                time.sleep(5)
                samples.append((elapsed, rss_mib(server.pid)))
                bar.n = int(elapsed)
                bar.set_postfix(calls=sum(len(v) for v in load.latency.values()), rss_mib=round(samples[-1][1]))
                bar.refresh()
        stop.set()
        for t in threads:
            t.join(timeout=args.deadline_s + 5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    report(args, load, samples)


def report(args, load: Load, samples: list[tuple[float, float]]) -> None:
    after_warmup = [rss for t, rss in samples if t >= args.warmup_s] or [samples[-1][1]]
    rss_start, rss_end = after_warmup[0], samples[-1][1]
    ops = {}
    for op, times in load.latency.items():
        ms = np.array(times) * 1000
        ops[op] = {"calls": len(times), "p50_ms": float(np.median(ms)) if len(ms) else None,
                   "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "codes": dict(load.codes[op])}
    unexpected = sum(n for op in ops.values() for code, n in op["codes"].items() if code not in EXPECTED)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "clients": args.clients,
              "minutes": args.minutes, "references_before": args.references, "add_share": args.add_share,
              "operations": ops, "unexpected_errors": unexpected,
              "rss_mib": {"after_warmup": rss_start, "end": rss_end, "max": max(r for _, r in samples),
                          "growth": (rss_end - rss_start) / rss_start},
              "command": "python -m bench.load " + " ".join(sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(result, indent=2))
    lines = ["| operation | calls | p50 | p99 | status codes |", "|---|---:|---:|---:|---|"]
    for op, r in ops.items():
        codes = ", ".join(f"{c} {n}" for c, n in sorted(r["codes"].items()))
        lines.append(f"| {op} | {r['calls']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {codes} |")
    rss = result["rss_mib"]
    lines += ["", f"Unexpected errors: {unexpected}. Server memory (RSS): {rss['after_warmup']:.0f} MiB after the "
              f"{args.warmup_s:.0f} s warm-up, {rss['end']:.0f} MiB at the end ({100 * rss['growth']:+.1f}%), "
              f"{rss['max']:.0f} MiB at most.", "",
              f"Machine: {result['machine']}. Date: {result['date']}. {args.clients} clients for {args.minutes:g} "
              f"minutes against `origin-id serve` on a fresh embedded PostgreSQL with {args.references} references; "
              f"{100 * args.add_share:.0f}% adds of new scenes, the rest queries of edited copies, one call at a time "
              f"per client, each with a {args.deadline_s:g} s deadline. Command: `{result['command']}`."]
    (args.out / "load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
