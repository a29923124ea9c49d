"""Images -> ID2 embeddings.

ID2 (arXiv 2501.02376): resize to 256x256 (no crop), scale pixels to [-1, 1],
take the VAE encoder's latent *mean* (repeatable, unlike ``.sample()``),
flatten, multiply by the learned W, L2-normalise. Batched; on CUDA the batch
runs on the GPU. References are also embedded by their regions
(``origin_id.indexer.regions``), cut from the same latent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.regions import Box, region_latents
from origin_id.models import compute
from origin_id.models.vae import preprocess

#: Images per encoder pass on a CPU (``Embedder._encode_spatial``).
CPU_CHUNK = 2


class Embedder:
    def __init__(self, bundle: ModelBundle, batch_size: int = 16, layout: Sequence[Box] = ()):
        self.bundle = bundle
        self.batch_size = batch_size
        #: The regions each reference is also indexed by (empty: the whole image only).
        self.layout = tuple(layout)

    @property
    def dim(self) -> int:
        return self.bundle.dim

    def latents(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Flattened VAE latent means (N, latent_dim) on the bundle's device."""
        return self.encode(preprocess(images))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``latents`` of an already preprocessed batch (``origin_id.models.vae.preprocess``)."""
        return compute.run(self._encode, x)

    @torch.inference_mode()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode_spatial(x).flatten(1)

    @torch.inference_mode()
    def _encode_spatial(self, x: torch.Tensor) -> torch.Tensor:
        # On a CPU the encoder runs CPU_CHUNK images at a time: the first blocks' activations
        # (16 channels at 256 x 256, 4 MB an image per layer) then stay in cache, and a batch
        # of 16 costs half as much as in one pass; on a GPU the batch goes whole.
        chunk = len(x) if self.bundle.device.type == "cuda" else CPU_CHUNK
        with self.bundle.lock:
            return torch.cat([self.bundle.vae.encode(x[s:s + chunk].to(self.bundle.device)).latent_dist.mean.float()
                              for s in range(0, len(x), chunk)])

    def project(self, latents: torch.Tensor) -> np.ndarray:
        """Flattened latents -> L2-normalised embeddings (N, dim), float32."""
        return compute.run(self._project, latents)

    @torch.inference_mode()
    def _project(self, latents: torch.Tensor) -> np.ndarray:
        return self.bundle.transform(latents).cpu().numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised embeddings (N, dim), float32, in input order."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        out = [self.project(self.latents(images[start:start + self.batch_size]))
               for start in range(0, len(images), self.batch_size)]
        return np.concatenate(out)

    def reference_vectors(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 1 + len(layout), dim) float32: each image whole (row 0), then its regions."""
        if not images:
            return np.zeros((0, 1 + len(self.layout), self.dim), np.float32)
        return np.concatenate([self.reference_vectors_of(preprocess(images[start:start + self.batch_size]))
                               for start in range(0, len(images), self.batch_size)])

    def reference_vectors_of(self, x: torch.Tensor) -> np.ndarray:
        """``reference_vectors`` of an already preprocessed batch: one encoder pass, the
        regions cut from its latents."""
        latents = compute.run(self._encode_spatial, x)
        stacked = torch.cat([latents[:, None], region_latents(latents, self.layout)], dim=1)
        n, per_image = stacked.shape[:2]
        return self.project(stacked.reshape(n * per_image, -1)).reshape(n, per_image, -1)
