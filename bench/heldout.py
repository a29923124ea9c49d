"""The benchmark of record: origin identification on held-out sources, served over gRPC.

    python -m bench.heldout_data            # once: fetch and cut the held-out packages
    python -m bench.heldout [--per-family 100] [--no-origin 250]

Nothing here was seen by any model or calibration of this project: the gallery and the
no-origin queries come from whole Debian packages kept out of training
(``bench.heldout_data``), and every query edit is made by ``bench.heldout_edits``
(albumentations, OpenCV, PIL drawing), never by ``training/edits.py``.

When the model has a background set (``origin_id.indexer.open_set``), the same answers are
also decided the way they were before it, on the raw top-1 score and the transform's
threshold, so one run shows what the normalisation buys.

The service runs as a user runs it: ``origin-id ingest`` of the gallery manifest into an
embedded PostgreSQL, then ``origin-id serve`` and one ``IdentifyOrigin`` call per query
over loopback gRPC. Beside it, in the same run on the same images: PDQ (Hamming distance,
match at <= 31 with quality >= 50) and a 32x32-pixel baseline (cosine of mean-centred
thumbnails; top-1 only, it has no decision).

Reported per edit family and per kind (copy, re-render, combined, inpaint): top-1
accuracy; over no-origin queries the share declared a match; the match decision's
accuracy over all queries (a positive is right when it is declared a match *and* its
top-1 is the origin); the score distributions. Writes ``bench/results/heldout.{md,json}``
and ``heldout_scores.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.heldout_data import load
from bench.heldout_edits import FAMILIES, KINDS, apply
from bench.load import free_port
from bench.service import machine
from origin_id.indexer.config import Settings
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.transform import LinearTransform
from origin_id.server.client import OriginClient
from training.twins import MIN_QUALITY, PDQ_MATCH_DISTANCE, pdq_hashes, twins

RESULTS = Path(__file__).resolve().parent / "results"
TINY = 32


def canonical_names(data: Path, manifest: dict) -> dict[str, str]:
    """Each gallery path -> the first gallery path with the same bytes: packages ship some
    files twice, the service stores such an image once, and either name is its origin."""
    first: dict[str, str] = {}
    out = {}
    for g in manifest["gallery"]:
        digest = hashlib.sha256((data / g["path"]).read_bytes()).hexdigest()
        out[g["path"]] = first.setdefault(digest, g["path"])
    return out


def make_queries(data: Path, manifest: dict, per_family: int, no_origin: int, seed: int) -> list[dict]:
    """Query JPEGs under ``data/queries`` (cached by name) and their truth."""
    rng = np.random.default_rng(seed)
    folder = data / "queries"
    folder.mkdir(exist_ok=True)
    gallery, outside = manifest["gallery"], manifest["outside"]
    plan = [(family, gallery[int(i)]) for family in FAMILIES
            for i in rng.choice(len(gallery), per_family, replace=False)]
    plan += [("no origin", outside[int(i)]) for i in rng.choice(len(outside), min(no_origin, len(outside)),
                                                                 replace=False)]
    queries = []
    for n, (family, item) in enumerate(tqdm(plan, desc="query edits", unit="img")):
        path = folder / f"{n:05d}.jpg"
        if not path.exists():
            with Image.open(data / item["path"]) as im:
                apply(family, im, seed * 100_000 + n).save(path, quality=90)
        queries.append({"path": str(path), "family": family, "kind": KINDS[family], "source": item["path"],
                        "origin": item["path"] if family != "no origin" else None})
    return queries


def ingest_and_serve(data: Path, manifest: dict, work: Path) -> tuple[subprocess.Popen, OriginClient]:
    """Ingest (images already stored in ``work`` are skipped by content hash) and serve."""
    rows = work / "gallery.jsonl"
    rows.write_text("".join(json.dumps({"path": str((data / g["path"]).resolve()), "external_id": g["path"]}) + "\n"
                            for g in manifest["gallery"]))
    cli = [sys.executable, "-m", "origin_id.server.cli"]
    subprocess.run([*cli, "ingest", str(rows), "--data-dir", str(work / "service"), "--allow-any-path"], check=True)
    port = free_port()
    proc = subprocess.Popen([*cli, "serve", "--data-dir", str(work / "service"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"})
    client = OriginClient(f"127.0.0.1:{port}", timeout=120)
    client.wait_until_serving(timeout=1200)
    return proc, client


def served(client: OriginClient, queries: list[dict]) -> list[dict]:
    answers = []
    for q in tqdm(queries, desc="IdentifyOrigin", unit="query"):
        start = time.monotonic()
        r = client.identify(Path(q["path"]).read_bytes(), top_k=5)
        top = r.candidates[0] if r.candidates else None
        answers.append({"top1": top.reference.external_id if top else None, "score": top.score if top else -1.0,
                        "top5": [(c.reference.external_id, c.score) for c in r.candidates],
                        "match": r.match, "threshold": r.match_threshold, "model": r.model_version,
                        "match_score": r.match_score, "background_score": r.background_score,
                        "inpainted": r.inpainting.inpainted, "basis": r.match_basis,
                        "inliers": [c.inliers for c in r.candidates],
                        "coverage": [round(c.inlier_coverage, 4) for c in r.candidates],
                        "agreement": [round(c.agreement, 4) for c in r.candidates],
                        "ms": (time.monotonic() - start) * 1000})
    return answers


def pdq(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    def images():
        for p in tqdm(paths, desc="PDQ", unit="img"):
            with Image.open(p) as im:
                yield im.convert("RGB")
    return pdq_hashes(images())


def tiny(paths: list[Path]) -> np.ndarray:
    out = np.zeros((len(paths), TINY * TINY * 3), np.float32)
    for i, p in enumerate(tqdm(paths, desc="32x32", unit="img")):
        with Image.open(p) as im:
            v = np.asarray(im.convert("RGB").resize((TINY, TINY), Image.BILINEAR), np.float32).ravel()
        v -= v.mean()
        out[i] = v / (np.linalg.norm(v) + 1e-6)
    return out


def gallery_pdq(data: Path, manifest: dict, work: Path) -> tuple[np.ndarray, np.ndarray]:
    cache = work / "gallery_pdq.npz"
    if cache.exists():
        z = np.load(cache)
        if len(z["hashes"]) == len(manifest["gallery"]):
            return z["hashes"], z["quality"]
    hashes, quality = pdq([data / g["path"] for g in manifest["gallery"]])
    np.savez(cache, hashes=hashes, quality=quality)
    return hashes, quality


def judge(data: Path, manifest: dict, queries: list[dict], gallery: tuple[np.ndarray, np.ndarray]) -> None:
    """Which answers are right, by the pictures rather than the file names. Packages ship
    one picture in several files (sizes, copies), so a positive's right answers are every
    gallery image PDQ calls the same picture as its origin (distance <= 31, both of
    quality >= 50), and a no-origin query whose unedited source is such a copy of a gallery
    image has its origin indexed after all: it is left out (``excluded``)."""
    names = [g["path"] for g in manifest["gallery"]]
    sources = sorted({q["source"] for q in queries})
    same = twins(pdq([data / s for s in sources]), gallery)
    copies = {s: {names[j] for j in np.flatnonzero(same[i])} for i, s in enumerate(sources)}
    for q in queries:
        if q["origin"]:
            q["accept"] = sorted(copies[q["source"]] | {q["origin"]})
        else:
            q["excluded"] = bool(copies[q["source"]])


def baselines(data: Path, manifest: dict, queries: list[dict],
              gallery: tuple[np.ndarray, np.ndarray]) -> dict[str, list[dict]]:
    names = [g["path"] for g in manifest["gallery"]]
    gallery_paths = [data / n for n in names]
    query_paths = [Path(q["path"]) for q in queries]
    gh, gq = gallery
    qh, qq = pdq(query_paths)
    g_bits, q_bits = gh.astype(np.float32), qh.astype(np.float32)
    pdq_answers, tiny_answers = [], []
    for s in range(0, len(queries), 256):  # Hamming = bits differing, by matrix products
        block = q_bits[s:s + 256]
        dist = block @ (1 - g_bits).T + (1 - block) @ g_bits.T
        best = dist.argmin(1)
        for j, b in enumerate(best):
            d = float(dist[j, b])
            pdq_answers.append({"top1": names[b], "score": 1 - d / 256, "match": bool(
                d <= PDQ_MATCH_DISTANCE and qq[s + j] >= MIN_QUALITY and gq[b] >= MIN_QUALITY)})
    gt, qt = tiny(gallery_paths), tiny(query_paths)
    for s in range(0, len(queries), 256):
        sim = qt[s:s + 256] @ gt.T
        best = sim.argmax(1)
        tiny_answers += [{"top1": names[b], "score": float(sim[j, b]), "match": None} for j, b in enumerate(best)]
    return {"PDQ": pdq_answers, "32x32 pixels": tiny_answers}


def figures(queries: list[dict], answers: list[dict]) -> dict:
    def right(i: int) -> bool:
        return answers[i]["top1"] in queries[i].get("accept", [queries[i]["origin"]])

    def top1(rows):
        return float(np.mean([right(i) for i in rows])) if rows else float("nan")

    positives = [i for i, q in enumerate(queries) if q["origin"]]
    negatives = [i for i, q in enumerate(queries) if not q["origin"] and not q.get("excluded")]
    out: dict = {"top-1, all positives": top1(positives)}
    for kind in ("copy", "re-render", "combined", "inpaint"):
        out[f"top-1, {kind}"] = top1([i for i in positives if queries[i]["kind"] == kind])
    for family in FAMILIES:
        out[f"family: {family}"] = top1([i for i in positives if queries[i]["family"] == family])
    if answers[0]["match"] is not None:
        out["no-origin declared a match"] = float(np.mean([answers[i]["match"] for i in negatives]))
        decided = [(answers[i]["match"] and right(i)) if queries[i]["origin"] else not answers[i]["match"]
                   for i in [*positives, *negatives]]
        out["decision accuracy, all queries"] = float(np.mean(decided))
        out["positives declared a match"] = float(np.mean([answers[i]["match"] for i in positives]))
        if any(a.get("basis") == "verified" for a in answers):
            out["declared by keypoint verification: positives / no-origin"] = [
                float(np.mean([answers[i].get("basis") == "verified" for i in rows]))
                for rows in (positives, negatives)]
    pos_scores = [answers[i]["score"] for i in positives if right(i)]
    neg_scores = [answers[i]["score"] for i in negatives]
    out["score: correct top-1, median / p10"] = [float(np.median(pos_scores)), float(np.percentile(pos_scores, 10))]
    out["score: no-origin top-1, median / p90"] = [float(np.median(neg_scores)), float(np.percentile(neg_scores, 90))]
    return out


def plot(queries: list[dict], answers: list[dict], threshold: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = {"copy": [], "re-render": [], "combined": [], "inpaint": [], "no-origin": []}
    for q, a in zip(queries, answers, strict=True):
        if q.get("excluded"):
            continue
        if q["origin"] is None or a["top1"] in q.get("accept", [q["origin"]]):
            kinds[q["kind"]].append(a["match_score"] if a["top1"] is not None else -1.0)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(min(min(v) for v in kinds.values() if v), max(max(v) for v in kinds.values() if v), 50)
    for kind, scores in kinds.items():
        ax.hist(scores, bins=bins, histtype="step", linewidth=1.6, label=f"{kind} ({len(scores)})", density=True)
    ax.axvline(threshold, color="k", linestyle="--", label=f"match threshold {threshold:.3f}")
    ax.set_xlabel("match score: top-1 score less the background score (correct origins; all no-origin queries)")
    ax.set_ylabel("density")
    ax.set_title("Held-out evaluation: where scores fall")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_verification(queries: list[dict], answers: list[dict], path: Path) -> bool:
    """Top-1 keypoint inliers against match score, with the served model's decision rule:
    right top-1s, wrong ones and no-origin queries. False when the answers carry no inliers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from origin_id.indexer.model_bundle import background_path
    from origin_id.indexer.open_set import BackgroundSet
    if not any(a.get("inliers") for a in answers):
        return False
    rule_file = background_path(Settings.from_env(dict(os.environ)))
    rule = BackgroundSet.load(rule_file) if rule_file is not None else None
    cover = rule.verify_coverage if rule is not None else float("inf")
    agree = rule.dense_agreement if rule is not None and rule.dense_inliers else float("inf")
    groups: dict[str, list[tuple[float, ...]]] = {"right top-1": [], "wrong top-1": [], "no-origin": []}
    for q, a in zip(queries, answers, strict=True):
        if q.get("excluded") or not a.get("inliers"):
            continue
        group = "no-origin" if q["origin"] is None else (
            "right top-1" if a["top1"] in q.get("accept", [q["origin"]]) else "wrong top-1")
        groups[group].append((a["match_score"], max(a["inliers"][0], 0), (a.get("coverage") or [0.0])[0],
                              (a.get("agreement") or [0.0])[0]))
    fig, ax = plt.subplots(figsize=(8, 5))
    for (name, points), colour in zip(groups.items(), ("tab:blue", "tab:gray", "tab:red")):
        if points:
            x, y, c, g = np.array(points).T
            wide = (c >= cover) | (g >= agree)  # the rule's coverage or agreement reached: triangles
            ax.scatter(x[~wide], y[~wide] + 1, s=9, alpha=0.5, color=colour, label=f"{name} ({len(points)})")
            ax.scatter(x[wide], y[wide] + 1, s=14, alpha=0.6, color=colour, marker="^")
    if rule is not None:
        ax.axvline(rule.match_margin, color="k", linestyle="--", label=f"match by score: >= {rule.match_margin:.3f}")
        if rule.verify_inliers:
            wide = f"; any score if coverage >= {cover:.2f} (triangles)" if np.isfinite(cover) else ""
            ax.fill_between([max(rule.verify_margin, -1.0), rule.match_margin], rule.verify_inliers + 1, 1e3,
                            color="tab:green", alpha=0.12, label=f"verified: >= {rule.verify_inliers} inliers, "
                                                                 f"score >= {rule.verify_margin:.3f}{wide}")
        if rule.dense_inliers:
            ax.axhline(rule.dense_inliers + 1, color="tab:purple", linestyle=":",
                       label=f"verified at any score: >= {rule.dense_inliers} inliers and pixels agreeing "
                             f">= {agree:.2f} (triangles, above the line)")
    ax.set_yscale("log")
    ax.set_ylim(0.8, 1e3)
    ax.set_xlabel("match score (top-1 score less the background score)")
    ax.set_ylabel("top-1 keypoint inliers + 1")
    ax.set_title("Held-out evaluation: the ways to a match")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(".data/heldout"))
    p.add_argument("--per-family", type=int, default=100)
    p.add_argument("--no-origin", type=int, default=250)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="service data dir (default DATA/run, reused)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--rejudge", action="store_true", help="judge the last run's answers again, no service run")
    args = p.parse_args(argv)
    manifest = load(args.data)
    queries = make_queries(args.data, manifest, args.per_family, args.no_origin, args.seed)
    canonical = canonical_names(args.data, manifest)
    for q in queries:
        q["origin"] = canonical[q["origin"]] if q["origin"] else None
    work = args.work or args.data / "run"
    work.mkdir(parents=True, exist_ok=True)
    gallery = gallery_pdq(args.data, manifest, work)
    if args.rejudge:  # the last run's answers, judged again (no service run)
        raw = json.loads((work / "answers.json").read_text())["answers"]
    else:
        proc, client = ingest_and_serve(args.data, manifest, work)
        try:
            raw = {"service": served(client, queries)}
        finally:
            client.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        for name, rows in baselines(args.data, manifest, queries, gallery).items():
            for row in rows:
                row["top1"] = canonical[row["top1"]]
            raw[name] = rows
        (work / "answers.json").write_text(json.dumps({"queries": queries, "answers": raw}))
    judge(args.data, manifest, queries, gallery)
    answers = raw["service"]
    results = {"service": figures(queries, answers)}
    if any(a["background_score"] for a in answers):
        # The same answers decided as before open-set normalisation: the raw top-1 score
        # against the transform's threshold (the ranking does not depend on it).
        settings = Settings.from_env()
        cut = LinearTransform.load(settings.transform or settings.model_dir / "transform.safetensors"
                                   ).config.match_threshold
        before = [{**a, "match": a["top1"] is not None and a["score"] >= cut, "basis": ""} for a in answers]
        results["service, raw-score decision"] = figures(queries, before)
    for name in ("PDQ", "32x32 pixels"):
        results[name] = figures(queries, raw[name])
    model = answers[0].get("model") or ModelBundle.load(Settings.from_env({}, inpainting=False)).version
    latency = [a["ms"] for a in answers]
    inpaint_rows = [a["inpainted"] for a, q in zip(answers, queries, strict=True) if q["kind"] == "inpaint"]
    other_rows = [a["inpainted"] for a, q in zip(answers, queries, strict=True) if q["kind"] != "inpaint"]
    extra = {"query p50 / p99 ms": [float(np.median(latency)), float(np.percentile(latency, 99))],
             "inpainted flagged: inpaint family": float(np.mean(inpaint_rows)),
             "inpainted flagged: other queries": float(np.mean(other_rows)),
             "match threshold": answers[0]["threshold"],
             "model": model}
    report(args, manifest, queries, answers, results, extra)


def report(args, manifest: dict, queries: list[dict], answers: list[dict], results: dict, extra: dict) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    header = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python -m bench.heldout " + " ".join(sys.argv[1:]),
              "gallery": len(manifest["gallery"]), "queries": len(queries),
              "no_origin_queries": sum(q["origin"] is None and not q.get("excluded") for q in queries),
              "excluded": sum(bool(q.get("excluded")) for q in queries), "sources": manifest["sources"]}
    (args.out / "heldout.json").write_text(json.dumps({**header, "results": results, "service": extra}, indent=2))
    names = list(results)
    lines = [f"Gallery {header['gallery']} images; {header['queries']} queries "
             f"({header['no_origin_queries']} with no indexed origin; {header['excluded']} more left out: their "
             f"source is in the gallery under another file, by PDQ). Model {extra['model']}. A positive is right "
             "when its top-1 is its origin or another file of the same picture (PDQ).", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in results["service"]:
        cells = []
        for name in names:
            v = results[name].get(key)
            cells.append("" if v is None or v != v else (" / ".join(f"{x:.3f}" for x in v) if isinstance(v, list)
                                                          else f"{v:.3f}"))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "| service | |", "|---|---:|"]
    def cell(v) -> str:
        return " / ".join(f"{x:.0f}" for x in v) if isinstance(v, list) else v if isinstance(v, str) else f"{v:.3f}"
    lines += [f"| {k} | {cell(v)} |" for k, v in extra.items()]
    lines += ["", f"Machine: {header['machine']}. Date: {header['date']}. Command: `{header['command']}`.",
              "Sources: " + "; ".join(f"`{k}` ({v})" for k, v in manifest["sources"].items()) + "."]
    (args.out / "heldout.md").write_text("\n".join(lines) + "\n")
    plot(queries, answers, extra["match threshold"], args.out / "heldout_scores.png")
    plot_verification(queries, answers, args.out / "heldout_verification.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
