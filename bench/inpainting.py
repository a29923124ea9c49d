"""Inpainting benchmark: detection and localization on the held-out photo split.

    python -m bench.inpainting [--per-group 300] [--perturbed 100]

All images come from the *test* photo split (``training.data.split_of``),
photos the detectors never trained or calibrated on, or with ``--photos DIR``
from every image under a directory of your own (``--split test``: only its
test split, when the detectors were trained on that directory's train and val
splits with ``training.train_detectors --photos DIR``). Groups:

* ``seen``: inpainted with the mask types and fills used in training;
* ``unseen mask`` (polygon) and ``unseen fill`` (smooth harmonic + grain),
  End4's unseen-pattern protocol;
* ``pristine``: the same crops, finished the same way (JPEG, sometimes a mild
  global edit), never inpainted;
* ``globally edited``: pristine crops passed through an edit family of
  ``training.edits`` (tone, palette, restyle, cartoon, film, ...), not inpainted;
* ``graphics`` (outside the photo protocol, reported apart): procedural scenes
  (``training.data.procedural_image``: flat shapes, gradients, sinusoid
  textures), never inpainted, finished the same way, from seeds of their own
  (the detector's training and calibration use other procedural scenes:
  ``training.detector_samples.GRAPHICS_TRAIN_SEED`` / ``GRAPHICS_VAL_SEED``);
  their false-positive rate shows how a trace detector reads clean renders,
  illustrations and graphics.

Reported: image-level AUC, AP and TPR at 5% FPR of each inpainted group
against all negatives; the false-positive rate at the shipped threshold on
pristine and on globally edited images (per edit family too); robustness
(AUC) of seen inpainting under JPEG 70 / 50, Gaussian blur and 0.5x
downscaling; each AUC's spread when the test photos are drawn again (a photo
bootstrap: a few photos resolve less than their many crops suggest);
pixel-level F1 and IoU per inpainted image (localizer forced on,
and as served, where a skipped localization counts as an empty mask);
milliseconds per query for detection alone and detection + localization.
Also broken down: AUC by fill method, mask type and painted area, and per test
photo (which content the misses come from). Writes
``bench/results/inpainting.{md,json}``, ``inpainting_roc.png``, a mask sheet
``inpainting_masks.png`` and the numbered test photos ``inpainting_photos.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from bench.inpainting_figures import mask_sheet, photo_sheet, plot_roc
from bench.inpainting_stats import (
    detection_scores,
    photo_bootstrap_auc,
)
from bench.service import conv_throughput, machine
from origin_id.detectors.analyzer import InpaintingAnalyzer, InpaintingResult
from origin_id.indexer.config import Settings
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.models.vae import preprocess
from training.data import allowed_photo_sets, photos_in_directory, photos_in_split, procedural_image
from training.inpainting import (
    FILLS,
    GLOBAL_EDIT_FAMILIES,
    SEEN_MASKS,
    UNSEEN_FILLS,
    UNSEEN_MASKS,
    Sample,
    make_sample,
)
from training.metrics import pixel_scores, roc_auc

RESULTS = Path(__file__).resolve().parent / "results"
SEEN_FILLS = [f for f in FILLS if f not in UNSEEN_FILLS]
PERTURBATIONS = ["jpeg70", "jpeg50", "blur", "downscale0.5"]
#: First procedural_image seed of the graphics group (training uses 700,000+, calibration 800,000+).
GRAPHICS_SEED = 900_000


def perturb(sample: Sample, kind: str) -> Sample:
    im = Image.open(io.BytesIO(sample.jpeg)).convert("RGB")
    mask = sample.mask
    if kind == "blur":
        im = im.filter(ImageFilter.GaussianBlur(1.0))
    elif kind == "downscale0.5":
        size = (max(32, im.width // 2), max(32, im.height // 2))
        im = im.resize(size, Image.Resampling.BILINEAR)
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 127
    quality = {"jpeg70": 70, "jpeg50": 50}.get(kind, 90)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return Sample(buf.getvalue(), mask, sample.inpainted, sample.mask_type, sample.fill, kind, sample.source)


def build_groups(photos, per_group: int, seed: int) -> dict[str, list[Sample]]:
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Sample]] = {name: [] for name in
                                       ["seen", "unseen mask", "unseen fill", "pristine", "globally edited"]}
    specs = {
        "seen": {"inpainted": True, "masks": SEEN_MASKS, "fills": SEEN_FILLS},
        "unseen mask": {"inpainted": True, "masks": UNSEEN_MASKS, "fills": SEEN_FILLS},
        "unseen fill": {"inpainted": True, "masks": SEEN_MASKS, "fills": UNSEEN_FILLS},
        "pristine": {"inpainted": False},
    }
    total = per_group * len(groups)
    with tqdm(total=total, desc="samples", unit="img", dynamic_ncols=True) as bar:
        for name, spec in specs.items():
            for _ in range(per_group):
                source = int(rng.integers(len(photos)))
                groups[name].append(replace(make_sample(photos[source], rng, **spec), source=source))
                bar.update()
        for i in range(per_group):
            family = GLOBAL_EDIT_FAMILIES[i % len(GLOBAL_EDIT_FAMILIES)]
            source = int(rng.integers(len(photos)))
            groups["globally edited"].append(
                replace(make_sample(photos[source], rng, inpainted=False, global_edit=family), source=source))
            bar.update()
    return groups


def analyze_all(analyzer: InpaintingAnalyzer, samples: list[Sample], localize: bool, desc: str):
    out: list[InpaintingResult] = []
    for s in tqdm(samples, desc=desc, unit="img", dynamic_ncols=True, leave=False):
        out.append(analyzer.analyze([Image.open(io.BytesIO(s.jpeg)).convert("RGB")], localize=localize)[0])
    return out


def latency(analyzer: InpaintingAnalyzer, samples: list[Sample], n: int) -> dict[str, float]:
    """Milliseconds per query, median and p95, with the host's convolution throughput just
    before and after (``conv_throughput``), so a run on a slowed host reads as one."""
    images = [Image.open(io.BytesIO(s.jpeg)).convert("RGB") for s in samples[:n]]
    out = {"host_gflops_before": conv_throughput(analyzer.device)}
    for name, localize in [("detect_ms", False), ("detect_localize_ms", True)]:
        analyzer.analyze(images[:1], localize=localize)  # warm-up
        times = []
        for im in images:
            start = time.perf_counter()
            analyzer.analyze([im], localize=localize)
            times.append((time.perf_counter() - start) * 1000)
        out[name] = float(np.median(times))
        out[name.replace("_ms", "_p95_ms")] = float(np.percentile(times, 95))
    # What the service adds to a query: it hands the analyzer the embedder's preprocessed
    # view and latents (one encoder pass for both jobs), so those are made outside the timer.
    times = []
    for im in images:
        x = preprocess([im])
        with torch.inference_mode():
            latents = analyzer.vae.encode(x).latent_dist.mean
        start = time.perf_counter()
        analyzer.analyze([im], latents, localize=True, inputs=x)
        times.append((time.perf_counter() - start) * 1000)
    out["added_ms"], out["added_p95_ms"] = float(np.median(times)), float(np.percentile(times, 95))
    out["host_gflops_after"] = conv_throughput(analyzer.device)
    return out


def mask_area_bucket(sample: Sample) -> str:
    area = float(sample.mask.mean())
    return "area < 3%" if area < 0.03 else "area 3-10%" if area < 0.10 else "area >= 10%"


def breakdown(inpainted: list[Sample], pos: np.ndarray, neg: np.ndarray) -> dict[str, dict[str, float]]:
    """AUC against all negatives of the inpainted images (every group pooled) by fill method,
    mask type and painted area: which kind of edit the detector misses."""
    keys = {"fill": lambda s: s.fill, "mask type": lambda s: s.mask_type, "painted area": mask_area_bucket}
    out: dict[str, dict[str, float]] = {}
    for what, key in keys.items():
        labels = np.array([key(s) for s in inpainted])
        out[what] = {label: roc_auc(pos[labels == label], neg) for label in sorted(set(labels))}
    return out


def per_photo(photos: list[Image.Image], groups: dict[str, list[Sample]], prob: dict[str, np.ndarray],
              f1_of: dict[str, np.ndarray], threshold: float) -> list[dict]:
    """Per test photo: AUC of the inpainted images cut from it against all negatives, the
    false-positive rate of its own negatives and its mean pixel F1. A few photos of flat or
    smooth content (a grey microscope field, a motion-blurred sky) hold most of the misses."""
    names = ["seen", "unseen mask", "unseen fill"]
    source = {name: np.array([s.source for s in samples]) for name, samples in groups.items()}
    neg = np.concatenate([prob["pristine"], prob["globally edited"]])
    neg_source = np.concatenate([source["pristine"], source["globally edited"]])
    rows = []
    for i, photo in enumerate(photos):
        pos = np.concatenate([prob[n][source[n] == i] for n in names])
        f1 = np.concatenate([f1_of[n][source[n] == i] for n in names])
        own = neg[neg_source == i]
        rows.append({"photo": i, "size": list(photo.size), "inpainted": len(pos), "negatives": len(own),
                     "auc": roc_auc(pos, neg) if len(pos) else float("nan"),
                     "fpr_at_threshold": float((own >= threshold).mean()) if len(own) else float("nan"),
                     "pixel_f1": float(f1.mean()) if len(f1) else float("nan")})
    return rows


def by_photo_set(photo_set: list[str], groups: dict[str, list[Sample]], prob: dict[str, np.ndarray],
                 threshold: float) -> dict[str, dict]:
    """The headline figures per part of the test photos (``photo_set[i]`` names photo i's part,
    ``training.data.PHOTO_SETS``): each inpainted group's AUC against the negatives cut from the
    same part's photos, and those negatives' false-positive rates. The first set's row is
    what the benchmark measured before the other Debian releases joined the photos."""
    out = {}
    for name in dict.fromkeys(photo_set):
        members = [i for i, part in enumerate(photo_set) if part == name]
        mine = {g: np.isin([s.source for s in samples], members) for g, samples in groups.items()}
        neg = np.concatenate([prob[g][mine[g]] for g in ("pristine", "globally edited")])
        row: dict = {"photos": len(members)}
        row.update({g: roc_auc(prob[g][mine[g]], neg) for g in ("seen", "unseen mask", "unseen fill")})
        row.update({f"fpr {g}": float((prob[g][mine[g]] >= threshold).mean())
                    for g in ("pristine", "globally edited")})
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-group", type=int, default=300)
    p.add_argument("--perturbed", type=int, default=100, help="seen + pristine samples per perturbation")
    p.add_argument("--graphics", type=int, default=100, help="procedural scenes for the graphics group")
    p.add_argument("--latency-queries", type=int, default=40)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--photos", type=Path, default=None,
                   help="build the samples from every image under this directory instead of the test split "
                        "(your own photos; they must not be ones the models trained on)")
    p.add_argument("--split", choices=["all", "test"], default="all",
                   help="with --photos: 'test' keeps only the directory's test split, for detectors trained "
                        "on the same directory (python -m training.train_detectors --photos DIR)")
    Settings.add_arguments(p, only=["vae", "transform", "detectors", "device", "inpainting_precision"])
    args = p.parse_args(argv)
    if args.split == "test" and not args.photos:
        raise SystemExit("--split applies to --photos (without it the benchmark uses the test split)")
    photo_set: list[str] = []
    if args.photos:
        photos = photos_in_directory(args.photos)
    else:  # the test split of the allowed photos, part by part (the same list as photos_in_split("test"))
        parts = {name: photos_in_split("test", part) for name, part in allowed_photo_sets().items()}
        photos = [im for part in parts.values() for im in part]
        photo_set = [name for name, part in parts.items() for _ in part]
    if args.photos and args.split == "test":
        photos = photos_in_split("test", photos)
        if not photos:
            raise SystemExit(f"no photo of {args.photos} falls in the test split")
    bundle = ModelBundle.load(Settings.from_args(args))
    if bundle.inpainting is None:
        raise SystemExit("no inpainting models: train them with python -m training.train_detectors")
    analyzer = bundle.inpainting
    groups = build_groups(photos, args.per_group, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    graphics = [make_sample(procedural_image(GRAPHICS_SEED + i), rng, inpainted=False)
                for i in range(args.graphics)]

    results = {name: analyze_all(analyzer, samples, localize=samples[0].inpainted, desc=name)
               for name, samples in groups.items()}
    prob = {name: np.array([r.probability for r in rs]) for name, rs in results.items()}
    negatives = np.concatenate([prob["pristine"], prob["globally edited"]])
    photo_of = {name: np.array([s.source for s in samples]) for name, samples in groups.items()}
    negative_photos = np.concatenate([photo_of["pristine"], photo_of["globally edited"]])
    report: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "precision": analyzer.precision,
                    "model_version": bundle.version, "test_photos": len(photos),
                    "photo_source": (f"{args.photos} ({args.split} photos)" if args.photos else "test split"),
                    "threshold": analyzer.threshold, "localize_threshold": analyzer.localize_threshold,
                    "per_group": args.per_group, "detection": {}, "localization": {}, "robustness": {}}
    positives_all, f1_of = [], {}
    for name in ["seen", "unseen mask", "unseen fill"]:
        pos = prob[name]
        positives_all.append(pos)
        f1, iou = zip(*(pixel_scores(r.mask, s.mask) for r, s in zip(results[name], groups[name])))
        f1_of[name] = np.asarray(f1)
        served = [pixel_scores(r.mask if r.probability >= analyzer.localize_threshold else None, s.mask)
                  for r, s in zip(results[name], groups[name])]
        report["detection"][name] = detection_scores(pos, negatives, analyzer.threshold)
        report["detection"][name]["auc_interval"] = photo_bootstrap_auc(
            pos, photo_of[name], negatives, negative_photos, seed=args.seed, photos=len(photos))
        report["localization"][name] = {"f1": float(np.mean(f1)), "iou": float(np.mean(iou)),
                                        "f1_as_served": float(np.mean([s[0] for s in served])),
                                        "localized_as_served": float((pos >= analyzer.localize_threshold).mean())}
    allpos = np.concatenate(positives_all)
    report["detection"]["all inpainted"] = detection_scores(allpos, negatives, analyzer.threshold)
    report["detection"]["all inpainted"]["auc_interval"] = photo_bootstrap_auc(
        allpos, np.concatenate([photo_of[n] for n in ["seen", "unseen mask", "unseen fill"]]), negatives,
        negative_photos, seed=args.seed, photos=len(photos))
    inpainted = [s for name in ["seen", "unseen mask", "unseen fill"] for s in groups[name]]
    report["breakdown"] = breakdown(inpainted, allpos, negatives)
    report["photos"] = per_photo(photos, groups, prob, f1_of, analyzer.threshold)
    for row, part in zip(report["photos"], photo_set):
        row["set"] = part
    if len(set(photo_set)) > 1:
        report["photo_sets"] = by_photo_set(photo_set, groups, prob, analyzer.threshold)
    report["false_positives"] = {
        "pristine": float((prob["pristine"] >= analyzer.threshold).mean()),
        "globally edited": float((prob["globally edited"] >= analyzer.threshold).mean()),
        # Families with no sample (a small --per-group) are left out rather than reported as NaN.
        "per_edit": {fam: float(np.mean(flags)) for fam in GLOBAL_EDIT_FAMILIES
                     if (flags := [r.probability >= analyzer.threshold
                                   for r, s in zip(results["globally edited"], groups["globally edited"])
                                   if s.global_edit == fam])},
    }
    if graphics:
        flagged = np.array([r.probability for r in analyze_all(analyzer, graphics, False, "graphics")])
        report["false_positives"]["graphics"] = float((flagged >= analyzer.threshold).mean())
        report["graphics"] = len(graphics)
    n = args.perturbed
    for kind in PERTURBATIONS:
        pos = np.array([r.probability for r in analyze_all(
            analyzer, [perturb(s, kind) for s in groups["seen"][:n]], False, kind)])
        neg = np.array([r.probability for r in analyze_all(
            analyzer, [perturb(s, kind) for s in groups["pristine"][:n]], False, kind)])
        report["robustness"][kind] = detection_scores(pos, neg, analyzer.threshold)
    report["latency"] = latency(analyzer, groups["seen"] + groups["pristine"], args.latency_queries)
    # Every photo-protocol score with its photo, so other cuts of this run need no rerun.
    report["scores"] = {name: {"probability": prob[name].round(5).tolist(), "photo": photo_of[name].tolist()}
                        for name in groups}
    for name, f1 in f1_of.items():  # the localizer forced on, as in the pixel F1 column
        report["scores"][name]["pixel_f1"] = f1.round(5).tolist()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inpainting.json").write_text(json.dumps(report, indent=2))
    (args.out / "inpainting.md").write_text(to_markdown(report))
    plot_roc({name: (prob[name], negatives) for name in ["seen", "unseen mask", "unseen fill"]},
             args.out / "inpainting_roc.png")
    sheet_samples = [s for name in ["seen", "unseen mask", "unseen fill"] for s in groups[name][:3]]
    sheet_results = [r for name in ["seen", "unseen mask", "unseen fill"] for r in results[name][:3]]
    mask_sheet(sheet_samples, sheet_results, args.out / "inpainting_masks.png", n=9)
    photo_sheet(photos, report["photos"], args.out / "inpainting_photos.png")
    print(to_markdown(report))


def to_markdown(r: dict) -> str:
    source = r.get("photo_source", "test split")
    photos = "held-out test photos" if source == "test split" else f"photos from {source}"
    date = f" Date: {r['date']}." if "date" in r else ""
    lines = [f"Machine: {r['machine']}; inpainting models in {r.get('precision', 'float32')}.{date} "
             f"Model {r['model_version']}; {r['test_photos']} {photos}, "
             f"{r['per_group']} images per group; shipped threshold {r['threshold']:.3f}, "
             f"localization skipped below {r['localize_threshold']:.3f}.", "",
             "| inpainted group | AUC | AUC, 95% of photo resamples | AP | TPR@5%FPR | TPR at threshold | "
             "pixel F1 | pixel IoU | F1 as served |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, d in r["detection"].items():
        loc = r["localization"].get(name)
        tail = (f"{loc['f1']:.3f} | {loc['iou']:.3f} | {loc['f1_as_served']:.3f}" if loc else "- | - | -")
        interval = "{:.3f}-{:.3f}".format(*d["auc_interval"]) if "auc_interval" in d else "-"
        lines.append(f"| {name} | {d['auc']:.3f} | {interval} | {d['ap']:.3f} | {d['tpr_at_5fpr']:.3f} | "
                     f"{d['tpr_at_threshold']:.3f} | {tail} |")
    if any("auc_interval" in d for d in r["detection"].values()):
        lines += ["", "The interval: the AUC over 2,000 redraws of the test photos with replacement, each drawn "
                      "photo with all its samples (its crops share its content, so they are not independent); "
                      "the 2.5% and 97.5% quantiles."]
    fp = r["false_positives"]
    graphics = (f" Outside the photo protocol: {fp['graphics']:.3f} of {r['graphics']} synthetic graphics "
                "(procedural scenes of seeds the inpainting models were not trained or calibrated on)."
                if "graphics" in fp else "")
    lines += ["", f"False positives at the shipped threshold: pristine {fp['pristine']:.3f}, "
                  f"globally edited {fp['globally edited']:.3f} "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in fp['per_edit'].items())})."
                  + graphics,
              "",
              "| perturbation (seen vs pristine) | AUC | TPR at threshold | FPR at threshold |", "|---|---|---|---|"]
    for kind, d in r["robustness"].items():
        lines.append(f"| {kind} | {d['auc']:.3f} | {d['tpr_at_threshold']:.3f} | {d['fpr_at_threshold']:.3f} |")
    if "breakdown" in r:
        lines += ["", "| inpainted images (all groups) by | kind | AUC |", "|---|---|---|"]
        lines += [f"| {what} | {label} | {v:.3f} |" for what, d in r["breakdown"].items() for label, v in d.items()]
    if "photos" in r:
        lines += ["", "Per test photo (`inpainting_photos.png` shows them, numbered): AUC of the inpainted images "
                      "cut from it against all negatives, false positives among its own negatives, mean pixel F1:",
                  "", "| photo | size | inpainted | AUC | negatives | FPR at threshold | pixel F1 |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["photos"]:
            part = f" ({row['set']})" if row.get("set") else ""
            lines.append(f"| #{row['photo']}{part} | {row['size'][0]} x {row['size'][1]} | {row['inpainted']} | "
                         f"{row['auc']:.3f} | {row['negatives']} | {row['fpr_at_threshold']:.3f} | "
                         f"{row['pixel_f1']:.3f} |")
    if "photo_sets" in r:
        lines += ["", "By part of the test photos (the first set: skimage, sklearn and the Debian 12 packages, "
                      "all the benchmark used before the other Debian releases were added), each group against "
                      "the same part's negatives:", "",
                  "| photos | count | AUC seen | AUC unseen mask | AUC unseen fill | FPR pristine | "
                  "FPR globally edited |", "|---|---|---|---|---|---|---|"]
        for name, row in r["photo_sets"].items():
            lines.append(f"| {name} | {row['photos']} | {row['seen']:.3f} | {row['unseen mask']:.3f} | "
                         f"{row['unseen fill']:.3f} | {row['fpr pristine']:.3f} | {row['fpr globally edited']:.3f} |")
    lat = r["latency"]
    lines += ["", f"Per query (one image at a time, median / p95): detection {lat['detect_ms']:.0f} / "
                  f"{lat['detect_p95_ms']:.0f} ms, detection + localization {lat['detect_localize_ms']:.0f} / "
                  f"{lat['detect_localize_p95_ms']:.0f} ms; added to a query as the service runs it (the "
                  f"embedder's view and latents reused, localization forced) {lat['added_ms']:.0f} / "
                  f"{lat['added_p95_ms']:.0f} ms."]
    if "host_gflops_before" in lat:
        lines[-1] += (f" The host's convolution throughput (`bench.service.conv_throughput`) was "
                      f"{lat['host_gflops_before']:.0f} GFLOP/s before these timings and "
                      f"{lat['host_gflops_after']:.0f} after.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
