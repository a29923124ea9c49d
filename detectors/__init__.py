"""Inpainting detection and localization, on the VAE the embedder already loaded.

One role per file:

* ``denoiser``: ``LatentDenoiser``, a small epsilon-prediction network over the
  VAE's latents, and the LaRE map it yields (LaRE^2);
* ``unet_lare``: ``UNetLare``, the same map from a pretrained Stable Diffusion
  UNet, for users who have one (the detectors are trained on either source);
* ``copy_move``: ``CopyMoveSearch``, copied patches found in the query itself;
* ``detector``: ``InpaintingDetector``, image features refined by the pixel
  reconstruction error and the LaRE map (error-guided spatial and channel
  refinement, scale-aware pyramid fusion) -> a probability and a coarse mask;
* ``localizer``: ``MaskDiffusionLocalizer``, InpDiffusion's conditional mask
  diffusion (mask + edge, 5 DDIM steps on the query and 5 on its mirror image, the 10 x0
  predictions averaged);
* ``query_mask``: ``QueryMask``, the localized region at the query's size
  (area, box, PNG) written from the low-resolution cut;
* ``analyzer``: ``InpaintingAnalyzer``, the runtime that strings them together
  for a query and owns the checkpoints' directory;
* ``weights``: one safetensors file per model, its config in the header.

The bundled checkpoints are trained by ``training/train_detectors.py`` and
live in ``indexer/default_model/inpainting``; ``ModelBundle`` loads them with
the VAE (their VAE fingerprint must match) so a process holds one copy.
"""
