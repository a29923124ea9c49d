"""Inpainting detection and localization (LaRE^2 / End4 detector, InpDiffusion localizer).

Not implemented yet: the service reports ``InpaintingVerdict.available = false``
on every answer until it is, and never a guessed verdict. The detectors will
receive the same ``indexer.model_bundle.ModelBundle`` as the embedder, so the
VAE is loaded once per process.
"""
