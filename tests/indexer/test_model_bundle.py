"""The real bundled models: embedding properties and loading rules."""

import numpy as np
import pytest
import torch

from origin_id.indexer.config import Settings
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.model_bundle import ModelBundle, select_device, select_inpainting_dtype
from origin_id.indexer.transform import LinearTransform, TransformConfig
from training.edits import apply


def test_embeddings_are_unit_norm_deterministic_and_batch_independent(bundle, reference_images):
    embedder = Embedder(bundle, batch_size=4)
    batch = embedder.embed(reference_images[:6])
    assert batch.shape == (6, bundle.dim) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = embedder.embed([reference_images[2]])
    np.testing.assert_allclose(single[0], batch[2], atol=1e-4)


def test_edited_copy_is_closest_to_its_origin(bundle, reference_images):
    embedder = Embedder(bundle)
    gallery = embedder.embed(reference_images)
    for i in (0, 3, len(reference_images) - 1):
        query = embedder.embed([apply("tone", reference_images[i], seed=i)])[0]
        scores = gallery @ query
        assert int(scores.argmax()) == i, scores


def test_transform_round_trip(tmp_path):
    t = LinearTransform(TransformConfig(latent_dim=64, rank=8, match_threshold=0.7, vae_fingerprint="abc"))
    path = tmp_path / "w.safetensors"
    t.save(path)
    loaded = LinearTransform.load(path)
    assert loaded.config == t.config
    x = torch.randn(3, 64)
    torch.testing.assert_close(loaded(x), t(x))


def test_transform_file_must_be_ours(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not an ID2 transform"):
        LinearTransform.load(path)


def test_transform_trained_for_another_vae_is_refused(tmp_path, bundle):
    t = LinearTransform(TransformConfig(latent_dim=4096, rank=8, vae_fingerprint="0123456789abcdef",
                                        vae_source="someone-else/vae"))
    path = tmp_path / "w.safetensors"
    t.save(path)
    with pytest.raises(ValueError, match="trained on VAE 'someone-else/vae'"):
        ModelBundle.load(Settings.from_env({}, transform=str(path)))


def test_cuda_request_without_cuda_is_an_error():
    if torch.cuda.is_available():
        assert select_device("cuda").type == "cuda"
    else:
        assert select_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_inpainting_precision_is_float32_unless_bfloat16_is_asked_for(bundle):
    """float32 by default on every host, so verdicts do not depend on the CPU; bfloat16 only on request."""
    assert Settings.from_env({}).inpainting_precision == "float32"
    assert bundle.inpainting.precision == "float32"
    assert select_inpainting_dtype("float32") is None
    assert select_inpainting_dtype("bfloat16") is torch.bfloat16
    for other in ("auto", "fp8"):
        with pytest.raises(ValueError, match="float32 or bfloat16"):
            select_inpainting_dtype(other)
