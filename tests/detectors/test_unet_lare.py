"""LaRE maps from a pretrained diffusers UNet: a tiny Stable-Diffusion-layout pipeline
(UNet, scheduler, CLIP text encoder and tokenizer, random weights) saved to disk the
way a real one is, loaded through the same code path as ``stabilityai/stable-diffusion-2``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from origin_id.detectors import analyzer as an
from origin_id.detectors.unet_lare import UNetLare, load_unet

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def save_tiny_pipeline(root: Path) -> Path:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule="scaled_linear").save_pretrained(root / "scheduler")
    # A CLIP BPE vocabulary of single letters (no merges): enough to encode short prompts.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"),
                  model_max_length=77).save_pretrained(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=77, bos_token_id=0,
                                 eos_token_id=1, pad_token_id=1)).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


def test_lare_is_the_noise_prediction_error_of_the_pipeline_unet(pipeline):
    from diffusers import DDPMScheduler

    lare = UNetLare.from_pretrained(pipeline, scaling_factor=0.18215)
    assert lare.config.latent_channels == 4 and lare.context.shape == (1, 77, 32)
    scheduler = DDPMScheduler.from_pretrained(str(pipeline), subfolder="scheduler")
    assert torch.equal(lare.alphas_cumprod, scheduler.alphas_cumprod.float())
    # The prompt is what the UNet is conditioned on: another prompt, another embedding.
    assert not torch.allclose(lare.context, UNetLare.from_pretrained(pipeline, 0.18215, prompt="a photo").context)

    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1)) * 5
    maps = lare.lare(latents, seed=3)
    assert maps.shape == (2, 4, 32, 32) and maps.dtype == torch.float32
    assert torch.equal(maps, lare.lare(latents, seed=3))
    assert not torch.allclose(maps, lare.lare(latents, seed=4))

    # Reference, one draw at a time: each draw's noise (in the order drawn) against the
    # UNet's prediction for the latents noised with it, at t=200, squared and averaged.
    g = torch.Generator().manual_seed(3)
    # Each latent of the batch gets the draws a batch of one gets.
    noise = torch.randn((lare.config.lare_draws, 1, *latents.shape[1:]), generator=g).expand(-1, *latents.shape)
    ab = scheduler.alphas_cumprod[200]
    t = torch.full((2,), 200)
    expected = torch.stack([
        (lare.unet(ab.sqrt() * latents * 0.18215 + (1 - ab).sqrt() * n, t,
                   encoder_hidden_states=lare.context.expand(2, -1, -1)).sample - n) ** 2
        for n in noise]).mean(0)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def test_a_v_prediction_unet_is_read_as_the_noise_it_implies(pipeline, tmp_path):
    """Stable Diffusion 2 at 768 px predicts v = a eps - s z0, not the noise; its LaRE map is the
    error of the noise that v implies, eps = a v + s z_t (a, s: sqrt of alpha-bar and of 1 - it)."""
    import shutil

    from diffusers import DDPMScheduler

    v_pipeline = tmp_path / "v-pipeline"
    shutil.copytree(pipeline, v_pipeline)
    DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  prediction_type="v_prediction").save_pretrained(v_pipeline / "scheduler")
    lare = UNetLare.from_pretrained(v_pipeline, scaling_factor=0.18215)
    assert lare.config.prediction_type == "v_prediction"

    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(5)) * 5
    noise = torch.randn((lare.config.lare_draws, 1, *latents.shape[1:]),
                        generator=torch.Generator().manual_seed(0)).expand(-1, *latents.shape)
    ab = lare.alphas_cumprod[200]
    a, s = ab.sqrt(), (1 - ab).sqrt()
    t, context = torch.full((2,), 200), lare.context.expand(2, -1, -1)
    expected = []
    for n in noise:
        z_t = a * latents * 0.18215 + s * n
        v = lare.unet(z_t, t, encoder_hidden_states=context).sample
        expected.append((a * v + s * z_t - n) ** 2)
    maps = lare.lare(latents, seed=0)
    torch.testing.assert_close(maps, torch.stack(expected).mean(0), rtol=1e-4, atol=1e-5)
    # Read as if it predicted the noise, the same UNet gives another map.
    assert not torch.allclose(maps, UNetLare.from_pretrained(pipeline, scaling_factor=0.18215).lare(latents))


def test_saved_lare_file_keeps_schedule_and_prompt_and_names_the_unet(pipeline, tmp_path, monkeypatch):
    monkeypatch.chdir(pipeline.parent)
    lare = UNetLare.from_pretrained(pipeline.name, scaling_factor=0.13, prompt="a photo")
    # A local pipeline named by a relative path is recorded absolute, to load from anywhere.
    assert lare.config.source == str(pipeline.resolve())
    monkeypatch.chdir(tmp_path)
    lare.save(tmp_path / "lare_unet.safetensors")
    # The UNet is referenced by its source, not copied: the file is the schedule and the embedding.
    assert (tmp_path / "lare_unet.safetensors").stat().st_size < 64_000
    loaded = UNetLare.load(tmp_path / "lare_unet.safetensors")
    assert loaded.config == lare.config and loaded.config.scaling_factor == 0.13
    latents = torch.randn(1, 4, 32, 32)
    assert torch.equal(loaded.lare(latents), lare.lare(latents))
    with pytest.raises(FileNotFoundError, match="UNet2DConditionModel"):
        load_unet(tmp_path / "no-such-pipeline")


def test_a_detectors_directory_holds_exactly_one_lare_source(pipeline, tmp_path, bundle):
    lare = UNetLare.from_pretrained(pipeline, scaling_factor=0.18215)
    source = bundle.inpainting
    analyzer = an.InpaintingAnalyzer(bundle.vae, lare, source.detector, source.localizer)
    analyzer.save(tmp_path)
    assert (tmp_path / an.UNET_LARE_FILE).is_file() and not (tmp_path / an.FILES["denoiser"]).exists()
    # The bundled detector learned the denoiser's maps: served with a UNet's, it is refused.
    with pytest.raises(ValueError, match="trained on LaRE maps of the project's latent denoiser"):
        an.InpaintingAnalyzer.load(tmp_path, bundle.vae)
    # Saving the denoiser-based models over it replaces the UNet's file: never both.
    source.save(tmp_path)
    assert (tmp_path / an.FILES["denoiser"]).is_file() and not (tmp_path / an.UNET_LARE_FILE).exists()
    lare.save(tmp_path / an.UNET_LARE_FILE)
    with pytest.raises(FileNotFoundError, match="exactly one LaRE source"):
        an.InpaintingAnalyzer.load(tmp_path, bundle.vae)
    (tmp_path / an.UNET_LARE_FILE).unlink()
    (tmp_path / an.FILES["denoiser"]).unlink()
    with pytest.raises(FileNotFoundError, match="neither"):
        an.InpaintingAnalyzer.load(tmp_path, bundle.vae)
