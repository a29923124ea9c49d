"""Fine-tuning the VAE's encoder with W for edit invariance."""

import pytest
import torch
import torch.nn.functional as F

from origin_id.indexer.transform import LinearTransform
from origin_id.models.vae import load_vae, vae_fingerprint
from training.train_invariant_encoder import info_nce, main

START_VAE = "indexer/default_model/vae"
START_W = "indexer/default_model/transform.safetensors"


def test_info_nce_rewards_pairs_that_agree():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(8, 16), dim=-1)
    same = info_nce(a, a, temperature=0.05)
    shuffled = info_nce(a, a[torch.randperm(8)], temperature=0.05)
    assert float(same) < 0.05 < float(shuffled)


def run(run_dir, steps: int) -> None:
    main(["--packages", "", "--origins", "24", "--per-batch", "3", "--recon-images", "2", "--steps", str(steps),
          "--diagnostic", "16", "8", "--run-dir", str(run_dir)])


def test_training_moves_the_encoder_only_and_resumes(tmp_path, capsys):
    run(tmp_path, 2)
    run(tmp_path, 3)
    assert "resumed at step 2" in capsys.readouterr().out
    start, tuned = load_vae(START_VAE), load_vae(tmp_path / "result" / "vae")
    start_state, tuned_state = start.state_dict(), tuned.state_dict()
    changed = {name for name in start_state if not torch.equal(start_state[name], tuned_state[name])}
    assert any(name.startswith("encoder.") for name in changed)
    # The decoder is frozen: the inpainting detectors' reconstruction keeps its meaning.
    assert not any(name.startswith(("decoder.", "post_quant_conv.")) for name in changed)
    transform = LinearTransform.load(tmp_path / "result" / "transform.safetensors")
    assert transform.config.vae_fingerprint == vae_fingerprint(tuned) != vae_fingerprint(start)
    assert transform.config.training["steps"] == 3
    assert transform.config.calibration == {}  # the start's threshold is not reused: promote refuses it
    assert not torch.equal(transform.linear.weight, LinearTransform.load(START_W).linear.weight)


def test_a_checkpoint_of_another_start_is_refused(tmp_path):
    run(tmp_path, 1)
    other = tmp_path / "other-vae"
    vae = load_vae(START_VAE)
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(0.5)
    vae.save_pretrained(other)
    with pytest.raises(SystemExit, match="another start"):
        main(["--vae", str(other), "--run-dir", str(tmp_path), "--evaluate"])
