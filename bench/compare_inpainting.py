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

from bench.inpainting_stats import photo_redraws, redrawn_aucs, redrawn_means
from training.metrics import roc_auc

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


def paired_row(base_value: float, other_value: float, redrawn_difference: np.ndarray) -> dict:
    """One figure of both runs, its difference, and the difference's range and share above
    zero over the photo redraws (NaN redraws, with no sample of the group, left out)."""
    diff = redrawn_difference[~np.isnan(redrawn_difference)]
    return {"base": float(base_value), "other": float(other_value), "difference": float(other_value - base_value),
            "range": [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))],
            "other_higher": float((diff > 0).mean())}


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
        rows[name] = paired_row(*aucs, redrawn[1] - redrawn[0])
    pixel = {}
    if all("pixel_f1" in r["scores"][g] for r in (base, other) for g in INPAINTED):
        for group in INPAINTED:
            photo = np.asarray(base["scores"][group]["photo"], int)
            f1 = [np.asarray(r["scores"][group]["pixel_f1"], float) for r in (base, other)]
            pixel[group] = paired_row(f1[0].mean(), f1[1].mean(),
                                      redrawn_means(f1[1], photo, counts) - redrawn_means(f1[0], photo, counts))
    false_positives = {}
    for group in NEGATIVES:
        false_positives[group] = [float((np.asarray(r["scores"][group]["probability"]) >= r["threshold"]).mean())
                                  for r in (base, other)]
    return {"auc": rows, "pixel_f1": pixel, "false_positives": false_positives, "rounds": rounds,
            "thresholds": [base["threshold"], other["threshold"]]}


def table(figure: str, rows: dict[str, dict]) -> list[str]:
    """Markdown lines of ``paired_row`` rows by inpainted group; ``figure`` names the figure."""
    lines = [f"| inpainted group | {figure} base | {figure} other | difference | range over photo redraws | "
             "redraws where other is higher |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lo, hi = row["range"]
        lines.append(f"| {name} | {row['base']:.3f} | {row['other']:.3f} | {row['difference']:+.3f} | "
                     f"{lo:+.3f} to {hi:+.3f} | {row['other_higher']:.0%} |")
    return lines


def to_markdown(result: dict, base_name: str, other_name: str) -> str:
    lines = [f"BASE: {base_name}; OTHER: {other_name}. The same samples scored by both; the range is the "
             f"difference over {result['rounds']:,} redraws of the test photos (each drawn photo with all its "
             "samples, both runs on the same redraws), 2.5% to 97.5%.", "", *table("AUC", result["auc"])]
    if result["pixel_f1"]:
        lines += ["", *table("pixel F1", result["pixel_f1"])]
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
