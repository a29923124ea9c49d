"""The model code every other layer shares, at the bottom of the dependency order.

* ``vae``: the Stable-Diffusion-style ``AutoencoderKL`` (bundled compact config or any
  diffusers one), the 256 px view both the embedder and the detectors read, and the
  fingerprint that ties a trained model to the VAE it was trained on;
* ``weights``: the checkpoint format: one safetensors file per model, its format name
  and config in the header;
* ``compute``: the one thread a service process runs its numeric work on.

Nothing here imports the rest of the service: ``server -> indexer -> detectors ->
models`` is the only direction imports go.
"""
