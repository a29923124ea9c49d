"""``MaskDiffusionLocalizer``: deterministic sampling, narrowing, the edge channel."""

from __future__ import annotations

import pytest
import torch

from origin_id.detectors import localizer as loc
from origin_id.models.weights import load_model, save_model


def test_localizer_sampling_is_deterministic_per_seed():
    torch.manual_seed(1)
    model = loc.MaskDiffusionLocalizer(loc.LocalizerConfig()).eval()
    cond = torch.randn(1, 36, 16, 16)
    a, b, c = model.sample(cond, seed=3), model.sample(cond, seed=3), model.sample(cond, seed=4)
    assert a.shape == (1, 1, 16, 16) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # A given start replaces the seed's draw, and one that does not fit the condition is refused.
    start = torch.randn((1, 2, 16, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(model.sample(cond, noise=start), a)
    with pytest.raises(ValueError, match=r"noise must have shape \(1, 2, 16, 16\)"):
        model.sample(cond, noise=torch.randn(1, 2, 8, 8))


def narrow_rows(wide: torch.Tensor, narrow: torch.Tensor) -> list[int]:
    """Where each of ``narrow``'s values sits in ``wide`` (a layer's biases name its channels)."""
    values = wide.tolist()
    return [values.index(v) for v in narrow.tolist()]


def test_a_narrowed_localizer_starts_from_the_wide_ones_weights(tmp_path):
    torch.manual_seed(2)
    wide = loc.MaskDiffusionLocalizer(loc.LocalizerConfig(cond_channels=12)).eval()
    x, t, cond = torch.randn(2, 2, 16, 16), torch.tensor([900, 30]), torch.randn(2, 12, 16, 16)
    # Keeping every channel is the same function; narrowing keeps the timestep embedding whole.
    assert torch.equal(wide.narrowed([48, 64, 96])(x, t, cond), wide(x, t, cond))
    narrow = wide.narrowed([32, 48, 96])
    assert (narrow.config.widths, narrow.config.time_width) == ([32, 48, 96], 48)
    assert not narrow.training and torch.equal(narrow.time[0].weight, wide.time[0].weight)
    assert sum(p.numel() for p in narrow.parameters()) < 0.8 * sum(p.numel() for p in wide.parameters())
    # Each kept output channel is the wide one's, read from the kept inputs (the first block
    # reads every input channel, and GroupNorm groups keep 4 of their 6 channels each).
    rows = narrow_rows(wide.enc[0].conv2.bias, narrow.enc[0].conv2.bias)
    assert sorted({r // 6 for r in rows}) == list(range(8)) and len(set(rows)) == 32
    assert torch.equal(narrow.enc[0].conv1.weight[:, :, 1, 1], wide.enc[0].conv1.weight[
        narrow_rows(wide.enc[0].conv1.bias, narrow.enc[0].conv1.bias), :, 1, 1])
    assert narrow(x, t, cond).shape == (2, 2, 16, 16)
    path = tmp_path / "narrow.safetensors"
    save_model(narrow, path, loc.FORMAT)
    loaded = load_model(loc.MaskDiffusionLocalizer, loc.LocalizerConfig, path, loc.FORMAT)
    assert loaded.config.time_width == 48 and torch.equal(loaded(x, t, cond), narrow(x, t, cond))
    with pytest.raises(ValueError, match="cannot narrow widths"):
        wide.narrowed([64, 64, 96])
    with pytest.raises(ValueError, match="its skip would change"):  # 32 -> 32 would be a plain residual
        wide.narrowed([32, 32, 96])
    with pytest.raises(ValueError, match="multiples of 8"):
        loc.MaskDiffusionLocalizer(loc.LocalizerConfig(widths=[20, 48, 96]))


def test_mask_edges_are_the_boundary_band():
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 3:6, 3:6] = 1
    edge = loc.mask_edges(mask)
    assert edge[0, 0, 4, 4] == 0 and edge[0, 0, 0, 0] == 0 and edge[0, 0, 3, 3] == 1 and edge[0, 0, 2, 4] == 1
