"""``InpaintingAnalyzer`` with the bundled models, on real photos with synthetic inpainting:
verdicts, masks, determinism, and the checks that keep mismatched models out."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from origin_id.detectors.analyzer import InpaintingAnalyzer
from tests.conftest import skimage_photos
from training.data import load_rgb, random_crop, skimage_images
from training.inpainting import finish, inpaint, make_sample
from training.metrics import pixel_scores


@pytest.fixture(scope="module")
def analyzer(bundle) -> InpaintingAnalyzer:
    assert bundle.inpainting is not None, "the bundled inpainting models should load by default"
    return bundle.inpainting


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return skimage_photos(256, modes=("RGB", "L"))


def _jpeg(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


# The latent fill's case re-synthesises every hole through the VAE (16 s): in the slow suite.
@pytest.mark.parametrize(("fill", "floor"), [("telea", 0.9), pytest.param("latent", 0.75, marks=pytest.mark.slow)])
def test_bundled_detector_separates_inpainted_from_pristine(analyzer, photos, fill, floor):
    """Same crops, same finishing; half get a region painted in: OpenCV Telea, or the latent
    fill (re-synthesised in the VAE's latent space, as diffusion inpainting does). The floors
    sit under what the bundled models score, so a model that stops telling them apart fails."""
    rng = np.random.default_rng(0)
    pristine, painted = [], []
    for i in range(16):
        crop = random_crop(photos[i % len(photos)], rng, 320, min_frac=0.5)
        fake = inpaint(crop, ["rectangle", "ellipse", "brush"][i % 3], fill, rng)
        pristine.append(_jpeg(finish(crop, fake.mask * False, np.random.default_rng(i))[0]))
        painted.append(_jpeg(finish(fake.image, fake.mask, np.random.default_rng(i))[0]))
    p_clean = np.array([r.probability for r in analyzer.analyze(pristine, localize=False)])
    p_fake = np.array([r.probability for r in analyzer.analyze(painted, localize=False)])
    auc = (p_fake[:, None] > p_clean[None, :]).mean()
    assert auc >= floor, f"AUC {auc:.2f}: fake {np.round(p_fake, 2)} clean {np.round(p_clean, 2)}"


def test_bundled_detector_reads_a_grainy_microscopy_photo_as_clean(analyzer):
    """Pristine crops of scikit-image's ``cell`` (a grainy grey microscopy field, a test-split
    photo), cut and finished as the benchmark's negatives are. Grain is where detectors
    trained on diffusion-style fills err (docs/inpainting-history.md): a model that reads
    grain as painting fails here."""
    cell = next((p for p in skimage_images() if p.stem == "cell"), None)
    if cell is None:
        pytest.skip("scikit-image's cell.png is not installed")
    photo = load_rgb(cell)
    rng = np.random.default_rng(5)
    queries = [_jpeg(make_sample(photo, rng, inpainted=False).jpeg) for _ in range(16)]
    results = analyzer.analyze(queries, localize=False)
    flagged = [round(r.probability, 2) for r in results if r.inpainted]
    assert not flagged, f"{len(flagged)} of 16 pristine crops flagged (threshold {analyzer.threshold:.2f}): {flagged}"


def test_verdict_mask_is_at_query_size_and_deterministic(analyzer, photos):
    rng = np.random.default_rng(5)
    crop = random_crop(photos[0], rng, 300, min_frac=0.6).resize((300, 220))
    fake = inpaint(crop, "rectangle", "telea", rng)
    query = _jpeg(finish(fake.image, fake.mask, rng)[0])
    first, again = analyzer.analyze([query], localize=True)[0], analyzer.analyze([query], localize=True)[0]
    assert first.localized and first.mask.shape == (220, 300)
    assert np.array_equal(first.mask, again.mask) and first.probability == again.probability
    png = Image.open(io.BytesIO(first.mask_png()))
    assert png.size == (300, 220) and set(np.unique(np.asarray(png))) <= {0, 255}
    # A query decoded at a reduced scale gets its mask at its own size.
    scaled = analyzer.analyze([query], localize=True, sizes=[(1200, 880)])[0]
    assert scaled.mask.shape == (880, 1200) and scaled.probability == first.probability
    if first.mask.any():
        x, y, w, h = first.bbox
        assert first.mask[y:y + h, x:x + w].sum() == first.mask.sum()
        assert first.area_fraction == pytest.approx(first.mask.mean())


def test_a_verdict_does_not_depend_on_its_batch(analyzer, photos):
    """Each query draws the LaRE and localizer noise a batch of one draws, so in a batch of
    three each gets the probability and mask it gets alone. At the default precision,
    float32, this holds on every host (bfloat16 rounds by batch shape on AMX CPUs)."""
    rng = np.random.default_rng(9)
    queries = []
    for i in range(3):
        crop = random_crop(photos[i], rng, 256, min_frac=0.6)
        fake = inpaint(crop, "ellipse", "telea", rng)
        queries.append(_jpeg(finish(fake.image, fake.mask, rng)[0]))
    batched = analyzer.analyze(queries, localize=True)
    for query, together in zip(queries, batched):
        alone = analyzer.analyze([query], localize=True)[0]
        assert together.probability == pytest.approx(alone.probability, abs=1e-4)
        assert (together.mask == alone.mask).mean() > 0.999


def test_bundled_localizer_marks_the_painted_region(analyzer, photos):
    """Telea-painted rectangles and ellipses (seen types), localized as served: the query's
    and its mirror image's masks averaged. A mirror's map left unflipped marks the wrong
    side of off-centre regions, and fails here."""
    rng = np.random.default_rng(7)
    f1 = []
    for i in range(8):
        crop = random_crop(photos[i % len(photos)], rng, 320, min_frac=0.5)
        fake = inpaint(crop, ["rectangle", "ellipse"][i % 2], "telea", rng)
        data, truth = finish(fake.image, fake.mask, rng)
        result = analyzer.analyze([_jpeg(data)], localize=True)[0]
        assert result.mask.shape == truth.shape
        f1.append(pixel_scores(result.mask, truth)[0])
    assert np.mean(f1) >= 0.7, f"pixel F1 per image {np.round(f1, 2)}"


def test_localization_is_skipped_when_confidently_clean(analyzer, photos):
    query = photos[1]
    config = analyzer.detector.config
    saved = config.localize_threshold
    try:
        config.localize_threshold = 1.01  # nothing reaches it: always "confidently clean"
        skipped = analyzer.analyze([query])[0]
        config.localize_threshold = 0.0
        done = analyzer.analyze([query])[0]
    finally:
        config.localize_threshold = saved
    assert not skipped.localized and skipped.mask is None and skipped.mask_png() == b""
    assert done.localized and done.mask.shape == (query.height, query.width)
    assert skipped.probability == done.probability


def test_detectors_refuse_a_different_vae(bundle, tmp_path):
    analyzer = bundle.inpainting
    analyzer.save(tmp_path)
    with pytest.raises(ValueError, match="fingerprint"):
        InpaintingAnalyzer.load(tmp_path, bundle.vae, vae_fingerprint="0" * 16)
    with pytest.raises(FileNotFoundError, match="missing"):
        InpaintingAnalyzer.load(tmp_path / "nowhere", bundle.vae)


@pytest.mark.slow  # an option's check (bfloat16, off by default), about 20 s
def test_bfloat16_analysis_keeps_the_float32_verdicts(analyzer, photos):
    """``inpainting_precision`` bfloat16 (opt-in, faster on CPUs with AMX) runs the same
    models under autocast: probabilities and masks stay close to float32's."""
    models = (analyzer.vae, analyzer.denoiser, analyzer.detector, analyzer.localizer)
    full, half = InpaintingAnalyzer(*models), InpaintingAnalyzer(*models, autocast_dtype=torch.bfloat16)
    assert (full.precision, half.precision) == ("float32", "bfloat16")
    rng = np.random.default_rng(7)
    queries = []
    for i in range(6):
        crop = random_crop(photos[i % len(photos)], rng, 300, min_frac=0.6)
        fake = inpaint(crop, ["rectangle", "ellipse", "brush"][i % 3], ["telea", "navier_stokes"][i % 2], rng)
        queries.append(_jpeg(finish(fake.image, fake.mask, rng)[0]))
    a, b = full.analyze(queries, localize=True), half.analyze(queries, localize=True)
    gaps = [abs(x.probability - y.probability) for x, y in zip(a, b)]
    assert max(gaps) < 0.03, f"probability gaps {np.round(gaps, 3)}"
    agree = [float((x.mask == y.mask).mean()) for x, y in zip(a, b)]
    assert min(agree) > 0.97, f"mask agreement {np.round(agree, 3)}"
