"""What the command line prints."""

import json

from origin_id.server import formatting
from origin_id.server.api.origin.v1 import origin_pb2 as pb


def test_a_clean_verdict_prints_no_mask_figures_and_an_inpainted_one_does():
    clean = pb.InpaintingVerdict(available=True, probability=0.2, inpainted=False, decision_threshold=0.86,
                                 localized=True, mask_area_fraction=0.12)
    assert formatting.format_verdict(clean) == "inpainting: not inpainted (p=0.200, threshold 0.860)"
    painted = pb.InpaintingVerdict(available=True, probability=0.97, inpainted=True, decision_threshold=0.86,
                                   localized=True, mask_area_fraction=0.09,
                                   mask_bbox=pb.BoundingBox(x=1, y=2, width=30, height=40))
    assert formatting.format_verdict(painted).endswith("mask covers 9.0% of the image, box x=1 y=2 w=30 h=40")
    assert "not checked" in formatting.format_verdict(pb.InpaintingVerdict(available=False))


def test_json_keeps_64_bit_counts_as_numbers_and_drops_the_binary_mask():
    stats = pb.GetIndexStatsResponse(references=12, indexed_vectors=12,
                                     collections=[pb.CollectionStats(name="a", references=12)])
    plain = json.loads(formatting.dumps(stats))
    assert plain["references"] == 12 and plain["collections"] == [{"name": "a", "references": 12}]
    reply = pb.IdentifyOriginResponse(candidates=[pb.Candidate(reference=pb.Reference(id=7), score=0.9)],
                                      inpainting=pb.InpaintingVerdict(available=True, mask_png=b"\x89PNG"))
    plain = json.loads(formatting.dumps(reply, drop=("inpainting.mask_png",)))
    assert plain["candidates"][0]["reference"]["id"] == 7 and "mask_png" not in plain["inpainting"]
