"""Training of the bundled default models, and the data they may use.

Only images the project is allowed to train on are used (see ``data``):
scikit-image / scikit-learn bundled samples, procedurally generated images and
the Debian wallpaper packages fetched by ``python -m training.fetch_data``.
"""
