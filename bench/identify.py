"""Origin-identification benchmark: the ID2 embedding against PDQ, per edit family.

    python -m bench.identify [--gallery 5000] [--per-family 60] [--no-origin 300]

Gallery: non-overlapping tiles of the allowed photos (tiles of one photo are
hard negatives of each other) topped up with procedural scenes to ``--gallery``
images. Queries: for every edit family of ``training.edits`` (seen and unseen
by training), edited copies of gallery images whose origin no model saw: half
tiles of *test-split* photos, half procedural scenes from the benchmark's seed
range; plus queries made from images that are *not* in the gallery (their
right answer is "no match"). ID2 is reported plain and with the service's
query views (``origin_id.indexer.query_views``: + mirror, + border trimming), so each
addition's gain is visible.

Reported per family and overall, for both methods on exactly the same data:
top-1 accuracy and mAP (1/rank of the origin); over all queries including the
no-origin ones, micro-AP and recall at 90% precision of the top-1 scores; the
accuracy of the service's own ``match`` decision (ID2: calibrated threshold
shipped with the model; PDQ: Hamming distance <= 31, quality >= 50); and
images/s of each. Writes ``bench/results/identify.{md,json}`` and a
precision-recall plot ``identify_pr.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.service import machine
from origin_id.indexer.config import Settings
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.query_views import query_views
from training.data import allowed_photos, photo_tiles, procedural_image, split_of
from training.edits import FAMILIES, apply
from training.twins import pdq_hashes as pdq_bits

RESULTS = Path(__file__).resolve().parent / "results"
PDQ_MATCH_DISTANCE = 31
PDQ_MIN_QUALITY = 50


def build_sets(n_gallery: int, n_outside: int, seed: int, size: int = 320):
    """(gallery, eligible, outside).

    Query origins (``eligible`` gallery positions) are tiles of *test-split*
    photos and procedural scenes from the benchmark's own seed range: images no
    model trained or calibrated on. Tiles of the other photos join the gallery
    as distractors only. ``outside`` (no-origin queries) holds tiles of other
    test photos and procedural scenes that are not in the gallery."""
    rng = np.random.default_rng(seed)
    test, other = [], []
    for photo in allowed_photos():
        tiles = photo_tiles(photo, size)
        if tiles:
            (test if split_of(photo) == "test" else other).append(tiles)
    rng.shuffle(test)
    cut = max(1, len(test) // 3)
    outside = [t for g in test[:cut] for t in g]
    origins = [t for g in test[cut:] for t in g]
    distractors = [t for g in other for t in g]
    n_procedural = max(0, n_gallery - len(origins) - len(distractors))
    gallery = origins + distractors + [procedural_image(2_000_000 + i, size=size) for i in range(n_procedural)]
    gallery = gallery[:n_gallery]
    photo_origins = list(range(min(len(origins), len(gallery))))
    procedural_origins = list(range(len(origins) + len(distractors), len(gallery)))
    outside += [procedural_image(3_000_000 + i, size=size) for i in range(max(0, n_outside - len(outside)))]
    rng.shuffle(outside)
    return gallery, (photo_origins, procedural_origins), outside[:n_outside]


def ranks_and_scores(similarity: np.ndarray, truth: np.ndarray):
    """Rank (1-based) of the true origin per query (0 when no origin) and the top-1 score.

    Ties count against the method (PDQ's distances are coarse and tie often):
    the origin ranks after every other image with the same score."""
    top_score = similarity.max(1)
    ranks = np.zeros(len(truth), int)
    has = truth >= 0
    true_scores = similarity[np.flatnonzero(has), truth[has]][:, None]
    ranks[has] = (similarity[has] > true_scores).sum(1) + (similarity[has] == true_scores).sum(1)
    return ranks, top_score


def micro_ap(scores: np.ndarray, correct: np.ndarray, n_positives: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Average precision and recall at 90% precision of top-1 predictions ranked by score."""
    order = np.argsort(-scores, kind="stable")
    hits = correct[order].astype(float)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / max(1, n_positives)
    ap = float((precision * hits).sum() / max(1, n_positives))
    ok = precision >= 0.9
    r_at_p90 = float(recall[ok].max()) if ok.any() else 0.0
    return ap, r_at_p90, precision, recall


def pdq_hashes(images) -> tuple[np.ndarray, np.ndarray]:
    """PDQ hashes packed 32 bytes a row, and their qualities."""
    bits, quality = pdq_bits(images)
    return np.packbits(bits, axis=1), quality


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between packed 256-bit hashes (a: n x 32, b: m x 32)."""
    table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    out = np.empty((len(a), len(b)), np.int32)
    for i in range(len(a)):
        out[i] = table[np.bitwise_xor(b, a[i])].sum(1)
    return out


def evaluate(name: str, similarity: np.ndarray, truth: np.ndarray, families: list[str],
             match: np.ndarray) -> dict:
    ranks, top_score = ranks_and_scores(similarity, truth)
    has = truth >= 0
    correct = ranks == 1
    per_family = {}
    for fam in dict.fromkeys(f for f, h in zip(families, has) if h):
        sel = np.array([f == fam for f in families]) & has
        per_family[fam] = {"top1": float(correct[sel].mean()), "mAP": float((1.0 / ranks[sel]).mean()),
                           "n": int(sel.sum())}
    ap, r90, precision, recall = micro_ap(top_score, correct, int(has.sum()))
    decision = np.where(has, match & correct, ~match)
    return {
        "method": name, "per_family": per_family,
        "top1": float(correct[has].mean()), "mAP": float((1.0 / ranks[has]).mean()),
        "micro_ap": ap, "recall_at_p90": r90, "decision_accuracy": float(decision.mean()),
        "no_origin_false_matches": float(match[~has].mean()),
        "_curve": (precision, recall),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=5000)
    p.add_argument("--per-family", type=int, default=60)
    p.add_argument("--no-origin", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    Settings.add_arguments(p, only=["vae", "transform", "device", "batch_size"])
    args = p.parse_args(argv)
    settings = Settings.from_args(args)

    gallery, (photo_origins, procedural_origins), outside = build_sets(args.gallery, args.no_origin, args.seed)
    rng = np.random.default_rng(args.seed)
    queries, truth, families = [], [], []
    fam_names = list(FAMILIES)
    for fam in fam_names:
        # Half the queries from held-out photos, half from procedural scenes.
        half = args.per_family // 2
        picks = [*rng.choice(photo_origins, half, replace=len(photo_origins) < half),
                 *rng.choice(procedural_origins, args.per_family - half, replace=False)]
        for j in picks:
            queries.append(apply(fam, gallery[j], seed=int(rng.integers(1 << 30))))
            truth.append(int(j))
            families.append(fam)
    for k, im in enumerate(outside):
        fam = fam_names[k % len(fam_names)]
        queries.append(apply(fam, im, seed=int(rng.integers(1 << 30))))
        truth.append(-1)
        families.append("no-origin")
    truth = np.array(truth)
    print(f"gallery {len(gallery)}, queries {len(queries)} ({int((truth < 0).sum())} without origin)")

    bundle = ModelBundle.load(dataclasses.replace(settings, inpainting=False))
    embedder = Embedder(bundle, settings.batch_size)
    t0 = time.perf_counter()
    g = np.concatenate([embedder.embed(gallery[i:i + 256])
                        for i in tqdm(range(0, len(gallery), 256), desc="ID2 gallery", unit="x256")])
    id2_rate = len(gallery) / (time.perf_counter() - t0)
    q = np.concatenate([embedder.embed(queries[i:i + 256])
                        for i in tqdm(range(0, len(queries), 256), desc="ID2 queries", unit="x256")])
    id2_sim = q @ g.T
    id2 = evaluate("ID2", id2_sim, truth, families, id2_sim.max(1) >= bundle.match_threshold)
    # The service's query views (indexer.query_views): each adds to what the plain embedding finds.
    variants = {"ID2 + flip": {"flip": True, "trim": False},
                "ID2 + flip + trim (service)": {"flip": True, "trim": True}}
    view_results = []
    for name, opts in variants.items():
        sims = []
        for im in tqdm(queries, desc=name, unit="query"):
            sims.append((embedder.embed(query_views(im, **opts)) @ g.T).max(0))
        sim = np.stack(sims)
        view_results.append(evaluate(name, sim, truth, families, sim.max(1) >= bundle.match_threshold))

    t0 = time.perf_counter()
    gh, gq = pdq_hashes(tqdm(gallery, desc="PDQ gallery", unit="img"))
    pdq_rate = len(gallery) / (time.perf_counter() - t0)
    qh, qq = pdq_hashes(queries)
    dist = hamming(qh, gh)
    dist[:, gq < PDQ_MIN_QUALITY] = 256  # low-quality hashes are discarded
    dist[qq < PDQ_MIN_QUALITY] = 256
    pdq_sim = 1.0 - dist / 256.0
    pdq = evaluate("PDQ", pdq_sim, truth, families, dist.min(1) <= PDQ_MATCH_DISTANCE)

    for r in [id2, *view_results]:
        r["images_per_s"] = round(id2_rate, 1)
    pdq["images_per_s"] = round(pdq_rate, 1)
    id2["match_threshold"] = bundle.match_threshold
    report(args, [id2, *view_results, pdq], len(gallery), len(queries), bundle.version)


def report(args, results: list[dict], n_gallery: int, n_queries: int, model_version: str) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    id2 = results[0]
    fams = list(id2["per_family"])
    head = " | ".join(f"{r['method']} top-1 | {r['method']} mAP" for r in results)
    rows = [f"| family | kind | seen in training | {head} |", "|---|---|---|" + "---:|" * (2 * len(results))]
    for fam in fams:
        f = FAMILIES[fam]
        cells = " | ".join(f"{r['per_family'][fam]['top1']:.3f} | {r['per_family'][fam]['mAP']:.3f}"
                           for r in results)
        rows.append(f"| {fam} | {f.kind} | {'yes' if f.seen else '**no**'} | {cells} |")

    def group(res, pred):
        sel = [res["per_family"][f] for f in fams if pred(FAMILIES[f])]
        return f"{np.mean([s['top1'] for s in sel]):.3f} | {np.mean([s['mAP'] for s in sel]):.3f}"

    for label, pred in [("seen families", lambda f: f.seen), ("unseen families", lambda f: not f.seen),
                        ("re-rendering families", lambda f: f.kind == "rerender")]:
        rows.append(f"| **{label}** | | | " + " | ".join(group(r, pred) for r in results) + " |")
    rows.append("| **all families** | | | " + " | ".join(f"{r['top1']:.3f} | {r['mAP']:.3f}" for r in results) + " |")
    summary = ["", "| over all queries (incl. no-origin) | " + " | ".join(r["method"] for r in results) + " |",
               "|---|" + "---:|" * len(results)]
    for key, label in [("micro_ap", "micro-AP"), ("recall_at_p90", "recall at 90% precision"),
                       ("decision_accuracy", "match-decision accuracy"),
                       ("no_origin_false_matches", "no-origin queries declared a match"),
                       ("images_per_s", "images/s (gallery hashing/embedding)")]:
        fmt = (lambda v: f"{v}") if key == "images_per_s" else (lambda v: f"{v:.3f}")
        summary.append(f"| {label} | " + " | ".join(fmt(r[key]) for r in results) + " |")
    text = "\n".join(rows + summary) + (
        f"\n\nGallery {n_gallery:,} images, {n_queries:,} queries; ID2 model {model_version}, match threshold "
        f"{id2['match_threshold']:.3f}. Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. Command: "
        f"`python -m bench.identify --gallery {args.gallery} --per-family {args.per_family} "
        f"--no-origin {args.no_origin}`.\n")
    (args.out / "identify.md").write_text(text)
    clean = {r["method"]: {k: v for k, v in r.items() if not k.startswith("_")} for r in results}
    (args.out / "identify.json").write_text(json.dumps(clean, indent=2) + "\n")
    _plot_pr(results, args.out / "identify_pr.png")
    print(text)


def _plot_pr(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for res in results:
        precision, recall = res["_curve"]
        ax.plot(recall, precision, label=f"{res['method']} (micro-AP {res['micro_ap']:.3f})")
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("recall (queries with an origin, top-1 correct)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
