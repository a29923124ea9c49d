"""The ID2 learned linear transform W and its file format.

``LinearTransform`` is ``Linear(latent_dim, rank, bias=False)`` applied to the
flattened VAE latent mean; cosine similarity of the outputs ranks origins.
It is saved as safetensors: the weight under ``weight`` and, in the header
metadata, the config (dimensions), the fingerprint of the VAE it was trained
on (a W is meaningless on another VAE's latents) and the calibrated match
threshold, so one file is all a deployment needs besides the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from origin_id.models.weights import read_checkpoint, write_checkpoint

FORMAT = "origin-id/id2-transform/v1"


@dataclass
class TransformConfig:
    latent_dim: int = 4096
    rank: int = 512
    #: What the VAE was, as given when W was trained (hub id, directory or "bundled").
    vae_source: str = "bundled"
    #: ``vae_fingerprint`` of that VAE; checked when the bundle is loaded.
    vae_fingerprint: str = ""
    #: Cosine score at or above which the top candidate is declared the origin.
    match_threshold: float = 0.5
    #: How the threshold was chosen (dataset, target precision, measured figures).
    calibration: dict[str, Any] = field(default_factory=dict)
    #: How W was trained (loss, steps, data); informational.
    training: dict[str, Any] = field(default_factory=dict)


class LinearTransform(nn.Module):
    def __init__(self, config: TransformConfig):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.latent_dim, config.rank, bias=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Flattened latents (N, latent_dim) -> L2-normalised embeddings (N, rank)."""
        return nn.functional.normalize(self.linear(latents), dim=-1)

    def save(self, path: str | Path) -> None:
        write_checkpoint(path, {"weight": self.linear.weight}, FORMAT, self.config)

    @classmethod
    def load(cls, path: str | Path) -> LinearTransform:
        fields, tensors = read_checkpoint(path, FORMAT, "an ID2 transform file")
        config, weight = TransformConfig(**fields), tensors["weight"]
        if tuple(weight.shape) != (config.rank, config.latent_dim):
            raise ValueError(f"{path}: weight is {tuple(weight.shape)}, config says "
                             f"({config.rank}, {config.latent_dim})")
        module = cls(config)
        module.linear.weight.data.copy_(weight)
        return module.eval()

