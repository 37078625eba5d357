"""diffatr: diffusion-based generative audio-text retrieval (DiffATR, Interspeech 2024)."""

__version__ = "0.1.0"
