"""Audio input: decoding and resampling (``io``, the only place that reads audio files) and
the log-mel front end (``frontend``, pure torch)."""

from diffatr.audio.frontend import LogMel, mel_filterbank
from diffatr.audio.io import (
    AudioError,
    AudioTruncatedWarning,
    DecodedAudio,
    decode_audio,
    is_silent,
    load_audio,
    pad_or_crop,
    prepare_waveform,
    split_windows,
)

__all__ = [
    "AudioError",
    "AudioTruncatedWarning",
    "DecodedAudio",
    "LogMel",
    "decode_audio",
    "is_silent",
    "load_audio",
    "mel_filterbank",
    "pad_or_crop",
    "prepare_waveform",
    "split_windows",
]
