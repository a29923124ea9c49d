"""Two inpainting benchmark runs on the same samples, compared photo by photo.

    python -m bench.compare_inpainting BASE.json OTHER.json [--out COMPARISON.md]

Both JSON reports come from ``bench.inpainting`` with the same photos, seed and
group sizes and different models (``--detectors``), so every sample was scored
by both. With 20 test photos, a change of 0.02 in one group's AUC can be the
photos rather than the models; drawing the photos again and scoring *both* runs
on each redraw (a paired photo bootstrap) shows how much of the change holds.
For each inpainted group: both AUCs, the difference, its range over the redraws
(2.5% and 97.5% quantiles) and the share of redraws where OTHER scores higher;
the same for the mean pixel F1 (localizer forced on) when both reports carry
per-image F1; and the false-positive rates of each run at its own threshold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.inpainting import photo_redraws, redrawn_aucs, redrawn_means, roc_auc

INPAINTED = ["seen", "unseen mask", "unseen fill"]
NEGATIVES = ["pristine", "globally edited"]


def group_scores(report: dict, groups: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, photos) of ``groups`` of a report, concatenated in that order."""
    scores = report["scores"]
    return (np.concatenate([np.asarray(scores[g]["probability"], float) for g in groups]),
            np.concatenate([np.asarray(scores[g]["photo"], int) for g in groups]))


def check_same_samples(base: dict, other: dict) -> None:
    """Refuse (ValueError) two reports that did not score the same samples."""
    for report, name in ((base, "BASE"), (other, "OTHER")):
        if "scores" not in report:
            raise ValueError(f"{name} has no per-sample scores: rerun it with this version of bench.inpainting")
    for key in ("test_photos", "photo_source", "per_group"):
        if base.get(key) != other.get(key):
            raise ValueError(f"the runs differ in {key}: {base.get(key)!r} vs {other.get(key)!r}")
    for group in INPAINTED + NEGATIVES:
        if base["scores"][group]["photo"] != other["scores"][group]["photo"]:
            raise ValueError(f"the runs' {group!r} samples come from different photos: not the same samples")


def compare(base: dict, other: dict, rounds: int = 2000, seed: int = 0) -> dict:
    """Per inpainted group (and all of them): AUCs, difference and its paired photo-bootstrap
    range; false positives of each run at its own threshold."""
    check_same_samples(base, other)
    counts = photo_redraws(int(base["test_photos"]), rounds, seed)
    rows = {}
    for name, groups in [*((g, [g]) for g in INPAINTED), ("all inpainted", INPAINTED)]:
        aucs, redrawn = [], []
        for report in (base, other):
            pos, pos_photo = group_scores(report, groups)
            neg, neg_photo = group_scores(report, NEGATIVES)
            aucs.append(roc_auc(pos, neg))
            redrawn.append(redrawn_aucs(pos, pos_photo, neg, neg_photo, counts))
        diff = redrawn[1] - redrawn[0]
        diff = diff[~np.isnan(diff)]
        rows[name] = {"base": aucs[0], "other": aucs[1], "difference": aucs[1] - aucs[0],
                      "range": [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))],
                      "other_higher": float((diff > 0).mean())}
    pixel = {}
    if all("pixel_f1" in r["scores"][g] for r in (base, other) for g in INPAINTED):
        for group in INPAINTED:
            photo = np.asarray(base["scores"][group]["photo"], int)
            f1 = [np.asarray(r["scores"][group]["pixel_f1"], float) for r in (base, other)]
            diff = redrawn_means(f1[1], photo, counts) - redrawn_means(f1[0], photo, counts)
            diff = diff[~np.isnan(diff)]
            pixel[group] = {"base": float(f1[0].mean()), "other": float(f1[1].mean()),
                            "difference": float(f1[1].mean() - f1[0].mean()),
                            "range": [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))],
                            "other_higher": float((diff > 0).mean())}
    false_positives = {}
    for group in NEGATIVES:
        false_positives[group] = [float((np.asarray(r["scores"][group]["probability"]) >= r["threshold"]).mean())
                                  for r in (base, other)]
    return {"auc": rows, "pixel_f1": pixel, "false_positives": false_positives, "rounds": rounds,
            "thresholds": [base["threshold"], other["threshold"]]}


def to_markdown(result: dict, base_name: str, other_name: str) -> str:
    lines = [f"BASE: {base_name}; OTHER: {other_name}. The same samples scored by both; the range is the "
             f"difference over {result['rounds']:,} redraws of the test photos (each drawn photo with all its "
             "samples, both runs on the same redraws), 2.5% to 97.5%.", "",
             "| inpainted group | AUC base | AUC other | difference | range over photo redraws | "
             "redraws where other is higher |", "|---|---|---|---|---|---|"]
    for name, row in result["auc"].items():
        lo, hi = row["range"]
        lines.append(f"| {name} | {row['base']:.3f} | {row['other']:.3f} | {row['difference']:+.3f} | "
                     f"{lo:+.3f} to {hi:+.3f} | {row['other_higher']:.0%} |")
    if result["pixel_f1"]:
        lines += ["", "| inpainted group | pixel F1 base | pixel F1 other | difference | range over photo redraws | "
                      "redraws where other is higher |", "|---|---|---|---|---|---|"]
        for name, row in result["pixel_f1"].items():
            lo, hi = row["range"]
            lines.append(f"| {name} | {row['base']:.3f} | {row['other']:.3f} | {row['difference']:+.3f} | "
                         f"{lo:+.3f} to {hi:+.3f} | {row['other_higher']:.0%} |")
    fp = ", ".join(f"{g} {a:.3f} -> {b:.3f}" for g, (a, b) in result["false_positives"].items())
    base_t, other_t = result["thresholds"]
    lines += ["", f"False positives at each run's own threshold ({base_t:.3f} -> {other_t:.3f}): {fp}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", type=Path, help="inpainting.json of the reference run")
    p.add_argument("other", type=Path, help="inpainting.json of the run to compare with it")
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    try:
        result = compare(json.loads(args.base.read_text()), json.loads(args.other.read_text()),
                         args.rounds, args.seed)
    except ValueError as e:
        raise SystemExit(f"cannot compare {args.base} with {args.other}: {e}") from None
    text = to_markdown(result, str(args.base), str(args.other))
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
