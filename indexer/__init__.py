"""Indexer: image bytes -> decode -> model bundle -> embedding -> store + index.

Modules, in data-flow order:

* ``decode``        bytes -> RGB image, with format and pixel limits
* ``vae``, ``transform``, ``model_bundle``  the models (VAE shared with detectors)
* ``embedder``      images -> L2-normalised ID2 embeddings, batched
* ``store``         PostgreSQL, the source of truth (references, labels, vectors)
* ``vector_index``  FAISS, a rebuildable cache of the store's vectors
* ``sources``, ``pipeline``  bulk ingestion: read -> decode -> embed -> write
* ``origin_index``  the facade the server and the CLI use
"""
