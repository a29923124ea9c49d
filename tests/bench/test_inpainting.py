"""The inpainting benchmark's bookkeeping: each sample remembers its photo, and the
per-photo and per-kind breakdowns read the right samples."""

from __future__ import annotations

import numpy as np
import pytest

from bench.inpainting import breakdown, build_groups, by_photo_set, per_photo
from bench.inpainting_stats import photo_bootstrap_auc
from training.data import procedural_image
from training.metrics import roc_auc


def test_groups_record_their_source_photo_and_breakdowns_follow_it():
    # Two photos of different sizes: every sample is a crop of one of them, so its
    # recorded source must be a valid index, and both photos must be drawn.
    photos = [procedural_image(11, size=320), procedural_image(12, size=448)]
    groups = build_groups(photos, per_group=6, seed=3)
    sources = {s.source for samples in groups.values() for s in samples}
    assert sources == {0, 1}

    # Scores that depend only on the source photo: photo 0's painted images score above
    # every negative, photo 1's below, so their AUCs must come out 1 and 0.
    names = ["seen", "unseen mask", "unseen fill", "pristine", "globally edited"]
    prob = {n: np.array([(0.9 if s.source == 0 else 0.1) if s.inpainted else 0.5 for s in groups[n]])
            for n in names}
    f1 = {n: np.full(len(groups[n]), 0.25) for n in names[:3]}
    rows = per_photo(photos, groups, prob, f1, threshold=0.6)
    assert [r["size"] for r in rows] == [[320, 320], [448, 448]]
    assert rows[0]["auc"] == 1.0 and rows[1]["auc"] == 0.0
    assert all(r["fpr_at_threshold"] == 0.0 for r in rows if r["negatives"])
    assert sum(r["inpainted"] for r in rows) == 18 and sum(r["negatives"] for r in rows) == 12

    inpainted = [s for n in names[:3] for s in groups[n]]
    pos = np.concatenate([prob[n] for n in names[:3]])
    neg = np.concatenate([prob["pristine"], prob["globally edited"]])
    table = breakdown(inpainted, pos, neg)
    assert set(table["fill"]) == {s.fill for s in inpainted}
    assert set(table["mask type"]) == {s.mask_type for s in inpainted}
    for label, auc in table["fill"].items():
        share = np.mean([s.source == 0 for s in inpainted if s.fill == label])
        assert auc == pytest.approx(share)  # AUC is 1 for photo-0 samples and 0 for photo-1 samples

    # Per part of the photos, each part's positives against that part's own negatives only.
    parts = by_photo_set(["first set", "other releases"], groups, prob, threshold=0.6)
    assert [parts[n]["photos"] for n in ("first set", "other releases")] == [1, 1]
    assert all(parts["first set"][g] == 1.0 and parts["other releases"][g] == 0.0
               for g in ("seen", "unseen mask", "unseen fill"))
    flagged = {n: np.array([(s.source == 0) * 0.8 if not s.inpainted else 0.0 for s in groups[n]])
               for n in names}
    fpr = by_photo_set(["first set", "other releases"], groups, flagged, threshold=0.6)
    assert fpr["first set"]["fpr pristine"] == 1.0 and fpr["other releases"]["fpr pristine"] == 0.0


def test_photo_bootstrap_spreads_with_how_much_the_photos_disagree():
    rng = np.random.default_rng(0)
    photo_pos, photo_neg = np.repeat(np.arange(10), 30), np.repeat(np.arange(10), 20)
    neg = rng.normal(0, 1, len(photo_neg))
    # Every photo alike: the positives of each are drawn from one shifted distribution.
    alike = rng.normal(1, 1, len(photo_pos))
    # Photos that disagree: half separate perfectly, half not at all.
    split = np.where(photo_pos < 5, rng.normal(10, 1, len(photo_pos)), rng.normal(0, 1, len(photo_pos)))
    for pos in (alike, split):
        lo, hi = photo_bootstrap_auc(pos, photo_pos, neg, photo_neg, rounds=500)
        assert lo < roc_auc(pos, neg) < hi
    narrow = np.subtract(*photo_bootstrap_auc(alike, photo_pos, neg, photo_neg, rounds=500)[::-1])
    wide = np.subtract(*photo_bootstrap_auc(split, photo_pos, neg, photo_neg, rounds=500)[::-1])
    assert wide > 2 * narrow
    # One round is the AUC of the drawn photos' samples, repeated as often as drawn: a draw
    # of photo 0 only (a one-round bootstrap of a single photo) is photo 0's own AUC.
    one = photo_bootstrap_auc(alike[:30], photo_pos[:30], neg[:20], photo_neg[:20], rounds=3)
    assert one[0] == pytest.approx(roc_auc(alike[:30], neg[:20])) == pytest.approx(one[1])
    # Ties count half, as in roc_auc.
    assert photo_bootstrap_auc(np.zeros(4), np.arange(4), np.zeros(4), np.arange(4), rounds=50) == (0.5, 0.5)


def test_benchmark_runs_on_a_directory_of_ones_own_photos(tmp_path):
    import json

    from PIL import Image

    from bench.inpainting import main
    from training.data import photos_in_directory

    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for i, seed in enumerate((21, 22, 25)):
        procedural_image(seed, size=320).save(photos / ("nested" if i else ".") / f"p{seed}.png")
    Image.new("RGB", (300, 300), (90, 90, 90)).save(photos / "flat.png")  # no content: dropped
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # undecodable: dropped
    assert len(photos_in_directory(photos)) == 3
    with pytest.raises(FileNotFoundError):
        photos_in_directory(tmp_path / "missing")
    flat_only = tmp_path / "flat-only"
    flat_only.mkdir()
    Image.new("RGB", (256, 256), (10, 200, 30)).save(flat_only / "green.png")
    with pytest.raises(ValueError, match="no usable images"):
        photos_in_directory(flat_only)

    with pytest.raises(SystemExit, match="--split applies to --photos"):
        main(["--split", "test"])
    train_only = tmp_path / "train-only"
    train_only.mkdir()
    for seed in (21, 25):  # both in the train split (p22 is a test photo)
        procedural_image(seed, size=320).save(train_only / f"p{seed}.png")
    with pytest.raises(SystemExit, match="falls in the test split"):
        main(["--photos", str(train_only), "--split", "test"])
    out = tmp_path / "results"
    main(["--photos", str(photos), "--per-group", "4", "--perturbed", "2", "--graphics", "2",
          "--latency-queries", "2", "--out", str(out)])
    text = (out / "inpainting.json").read_text()
    assert "NaN" not in text  # small groups leave some edit families and painted areas empty
    report = json.loads(text)
    assert report["test_photos"] == 3 and report["photo_source"] == f"{photos} (all photos)"
    assert {r["photo"] for r in report["photos"]} == {0, 1, 2}
    assert sum(r["inpainted"] for r in report["photos"]) == 12  # 3 inpainted groups x 4
    for group in ("seen", "unseen mask", "unseen fill", "all inpainted"):
        lo, hi = report["detection"][group]["auc_interval"]
        assert lo <= report["detection"][group]["auc"] <= hi
    scores = report["scores"]
    assert set(scores) == {"seen", "unseen mask", "unseen fill", "pristine", "globally edited"}
    assert all(len(g["probability"]) == len(g["photo"]) == 4 and set(g["photo"]) <= {0, 1, 2}
               for g in scores.values())
    latency = report["latency"]
    assert latency["added_ms"] > 0 and latency["host_gflops_before"] > 0 and latency["host_gflops_after"] > 0
    markdown = (out / "inpainting.md").read_text()
    assert f"3 photos from {photos}" in markdown
    assert f"was {latency['host_gflops_before']:.0f} GFLOP/s before these timings" in markdown
    assert (out / "inpainting_photos.png").is_file() and (out / "inpainting_masks.png").is_file()



def _report(scores: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float = 0.5,
            pixel_f1: dict[str, np.ndarray] | None = None) -> dict:
    report = {"test_photos": 10, "photo_source": "test split", "per_group": 40, "threshold": threshold,
              "scores": {g: {"probability": p.tolist(), "photo": ph.tolist()} for g, (p, ph) in scores.items()}}
    for group, f1 in (pixel_f1 or {}).items():
        report["scores"][group]["pixel_f1"] = f1.tolist()
    return report


def test_comparison_pairs_two_runs_on_the_same_photo_redraws(tmp_path, capsys):
    import json

    from bench.compare_inpainting import compare, main

    rng = np.random.default_rng(1)
    photo = np.repeat(np.arange(10), 4)
    negatives = {g: (rng.normal(0, 1, 40), photo) for g in ("pristine", "globally edited")}
    painted = {g: rng.normal(1, 1, 40) for g in ("seen", "unseen mask", "unseen fill")}
    f1 = {g: rng.uniform(0, 1, 40) for g in painted}
    base = _report({**negatives, **{g: (p, photo) for g, p in painted.items()}}, pixel_f1=f1)
    # OTHER scores the unseen fill higher on half of the photos, and its masks of the seen
    # group are worse on photo 0 only; nothing else differs.
    lifted = painted["unseen fill"] + np.where(photo < 5, 1.5, 0.0)
    worse = f1["seen"] - np.where(photo == 0, 0.5, 0.0)
    other = _report({**negatives, **{g: (p, photo) for g, p in painted.items()}, "unseen fill": (lifted, photo)},
                    threshold=0.6, pixel_f1={**f1, "seen": worse})
    result = compare(base, other, rounds=400)
    fill = result["auc"]["unseen fill"]
    neg = np.concatenate([negatives["pristine"][0], negatives["globally edited"][0]])
    assert fill["base"] == pytest.approx(roc_auc(painted["unseen fill"], neg))
    assert fill["other"] == pytest.approx(roc_auc(lifted, neg))
    assert fill["range"][0] > 0 and fill["other_higher"] > 0.95  # a gain every redraw keeps
    seen = result["auc"]["seen"]
    assert seen["difference"] == 0 and seen["range"] == [0, 0] and seen["other_higher"] == 0
    assert 0 < result["auc"]["all inpainted"]["difference"] < fill["difference"]
    pixel = result["pixel_f1"]
    assert pixel["seen"]["difference"] == pytest.approx(-0.5 * 4 / 40)
    assert pixel["seen"]["range"][1] <= 0 < pixel["seen"]["range"][1] - pixel["seen"]["range"][0]
    assert pixel["seen"]["other_higher"] == 0  # a loss where photo 0 is drawn, no change where not
    assert pixel["unseen fill"]["difference"] == 0 and pixel["unseen fill"]["range"] == [0, 0]
    fp = (negatives["pristine"][0] >= 0.5).mean(), (negatives["pristine"][0] >= 0.6).mean()
    assert result["false_positives"]["pristine"] == pytest.approx(list(fp))

    paths = []
    for name, report in (("base", base), ("other", other)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    main([str(paths[0]), str(paths[1]), "--rounds", "100", "--out", str(tmp_path / "cmp.md")])
    table = (tmp_path / "cmp.md").read_text()
    assert "| unseen fill |" in table and "pixel F1 base" in table and "| unseen fill |" in capsys.readouterr().out
    # Reports without per-image F1 (older runs) compare on AUC alone.
    plain = {**negatives, **{g: (p, photo) for g, p in painted.items()}}
    assert compare(_report(plain), _report(plain))["pixel_f1"] == {}
    # Runs that did not score the same samples are refused, not compared.
    moved = _report({**negatives, **{g: (p, photo[::-1]) for g, p in painted.items()}})
    paths[1].write_text(json.dumps(moved))
    with pytest.raises(SystemExit, match="different photos"):
        main([str(paths[0]), str(paths[1])])
    paths[1].write_text(json.dumps({k: v for k, v in other.items() if k != "scores"}))
    with pytest.raises(SystemExit, match="no per-sample scores"):
        main([str(paths[0]), str(paths[1])])
