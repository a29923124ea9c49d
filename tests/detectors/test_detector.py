"""``InpaintingDetector`` and the other models' serialization: config round trips, the
served views, the trace input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from origin_id.detectors import denoiser as den
from origin_id.detectors import detector as det
from origin_id.detectors import localizer as loc
from origin_id.models.weights import load_model, save_model


@pytest.mark.parametrize(("cls", "config_cls", "fmt", "inputs"), [
    (den.LatentDenoiser, den.DenoiserConfig, den.FORMAT,
     lambda: (torch.randn(2, 4, 32, 32), torch.tensor([10, 500]))),
    (det.InpaintingDetector, det.DetectorConfig, det.FORMAT,
     lambda: (torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64), torch.rand(2, 4, 8, 8))),
    (loc.MaskDiffusionLocalizer, loc.LocalizerConfig, loc.FORMAT,
     lambda: (torch.randn(2, 2, 16, 16), torch.tensor([3, 900]), torch.randn(2, 36, 16, 16))),
])
def test_models_round_trip_with_their_config(tmp_path, cls, config_cls, fmt, inputs):
    torch.manual_seed(0)
    model = cls(config_cls()).eval()
    model.config.training = {"note": "kept"} if hasattr(model.config, "training") else None
    path = tmp_path / "m.safetensors"
    save_model(model, path, fmt)
    loaded = load_model(cls, config_cls, path, fmt)
    args = inputs()
    with torch.no_grad():
        a, b = model(*args), loaded(*args)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert torch.allclose(a, b, atol=1e-6)
    assert loaded.config == model.config
    other = loc.FORMAT if fmt != loc.FORMAT else den.FORMAT
    with pytest.raises(ValueError, match="is not a"):
        load_model(cls, config_cls, path, other)


def test_both_views_in_one_pass_are_the_query_and_its_mirror():
    """``both_views`` batches the mirror with the query; each keeps its own output (the
    mirror's maps in mirrored coordinates), and the verdict is built from them."""
    torch.manual_seed(4)
    model = det.InpaintingDetector(det.DetectorConfig()).eval()
    x, err, lare = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64), torch.rand(3, 4, 8, 8)
    with torch.no_grad():
        out, mirrored = model.both_views(x, err, lare)
        alone, flipped = model(x, err, lare), model.mirrored(x, err, lare)
        for a, b in ((out, alone), (mirrored, flipped)):
            assert a.logit.shape == (3,) and a.features.shape == b.features.shape
            for name in ("logit", "mask_logit", "features"):
                assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5)
        assert not torch.allclose(out.mask_logit, mirrored.mask_logit, atol=1e-3)  # two different views
        logit, verdict_out, _ = model.verdict(x, err, lare)
        assert torch.allclose(logit, (alone.logit + flipped.logit) / 2, atol=1e-5)
        assert torch.allclose(verdict_out.features, alone.features, atol=1e-5)


def test_the_residual_band_keeps_fine_grain_and_drops_flat_colour():
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    grain = ((xx + yy) % 2).float().expand(1, 3, 64, 64) * 0.2           # 1-px checkerboard
    stripes = ((xx // 6) % 2).float().expand(1, 3, 64, 64) * 0.2         # 6-px stripes
    flat = torch.full((1, 3, 64, 64), 0.3)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # away from the borders' partial means
    assert det.residual_band(flat)[inner].abs().max() < 1e-3  # float rounding only
    assert det.residual_band(grain).shape == (1, 6, 64, 64)
    energy = {name: float(det.residual_band(im)[:, 0][inner[1:]].abs().mean())
              for name, im in (("grain", grain), ("stripes", stripes))}
    assert energy["grain"] > 3 * energy["stripes"]


def test_a_checkpoint_naming_a_retired_option_loads_at_its_neutral_value_only(tmp_path):
    """Configs saved before an experiment's option was retired still load when they name it
    at the value the model computes; any other value is refused, not silently ignored."""
    model = det.InpaintingDetector(det.DetectorConfig()).eval()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "d.safetensors"
    for extra, loads in (({"trace_bands": 1, "scale_view": 0}, True), ({"scale_view": 192}, False)):
        config = {**dataclasses.asdict(model.config), **extra}
        save_file(tensors, str(path), metadata={"format": det.FORMAT, "config": json.dumps(config)})
        if loads:
            assert load_model(det.InpaintingDetector, det.DetectorConfig, path, det.FORMAT).config == model.config
        else:
            with pytest.raises(ValueError, match="retired"):
                load_model(det.InpaintingDetector, det.DetectorConfig, path, det.FORMAT)
