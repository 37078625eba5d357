"""Datasets and manifests: what audio there is and what its captions are. No downloads."""
