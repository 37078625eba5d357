"""Audio decoding, resampling and length policy: the only module that reads audio files.

Everything that enters the library as sound passes through here: files via ``load_audio`` /
``decode_audio`` (libsndfile through soundfile, resampling with soxr) and in-memory arrays
(e.g. a Gradio microphone recording) via ``prepare_waveform``. All of them return mono
float32 at the requested rate, or raise ``AudioError`` with a message that says what is
wrong and what to do. This module owns no model code and never touches global randomness.

Shapes: S samples, C channels, W windows.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile
import soxr
import torch
import torch.nn.functional as F

from diffatr.errors import DiffatrError

# Rates outside this range are almost certainly a bug (a rate passed in kHz, or a header
# that lies), and soxr/libsndfile would either fail obscurely or allocate absurd buffers.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# More "channels" than this in an in-memory array means the caller passed a batch or a
# spectrogram, not a multichannel recording.
MAX_CHANNELS = 64
# libsndfile learned MP3 decoding in 1.1.0.
_MP3_MIN_LIBSNDFILE = (1, 1, 0)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class AudioError(DiffatrError):
    """Bad audio input: a missing, empty, corrupt or unsupported file, or an unusable array."""


class AudioTruncatedWarning(UserWarning):
    """Audio longer than ``max_seconds`` was cut; only its beginning is used."""


@dataclass(frozen=True)
class DecodedAudio:
    """The result of ``decode_audio``.

    Attributes:
        waveform: (S,) float32 mono at ``sample_rate``.
        sample_rate: the rate of ``waveform`` (the rate that was asked for).
        duration_s: length of ``waveform`` in seconds.
        source_sample_rate: the file's own rate.
        source_channels: the file's channel count (mixed down to mono by averaging).
        truncated: True when the file was longer than ``max_seconds`` and was cut.
    """

    waveform: np.ndarray
    sample_rate: int
    duration_s: float
    source_sample_rate: int
    source_channels: int
    truncated: bool


# ----------------------------------------------------------------------------- validation


def _check_rate(sample_rate: object, what: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise AudioError(f"{what} must be a number of samples per second, got {sample_rate!r}")
    if isinstance(sample_rate, float) and not sample_rate.is_integer():
        raise AudioError(f"{what} must be a whole number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{what} {rate} Hz is outside the supported range {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
            " (rates are given in Hz, e.g. 44100, not 44.1)"
        )
    return rate


def _check_max_seconds(max_seconds: float | None) -> float | None:
    if max_seconds is None:
        return None
    if not (isinstance(max_seconds, (int, float)) and math.isfinite(max_seconds) and max_seconds > 0):
        raise AudioError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    return float(max_seconds)


def _check_finite(waveform: np.ndarray, source: str) -> None:
    if not np.isfinite(waveform).all():
        bad = int(np.size(waveform) - np.isfinite(waveform).sum())
        raise AudioError(
            f"{source} contains {bad} NaN or infinite samples; the recording is corrupt"
            " (re-export it, or replace the bad samples before passing it in)"
        )


def _resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """(S,) float32 at source_rate -> (S',) float32 at target_rate (soxr, quality HQ)."""
    if source_rate == target_rate:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    out = soxr.resample(waveform, source_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def _libsndfile_version() -> tuple[int, ...]:
    text = getattr(soundfile, "__libsndfile_version__", "0")
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def mp3_supported() -> bool:
    """Whether the installed libsndfile can decode MP3 (version 1.1.0 or newer)."""
    return _libsndfile_version() >= _MP3_MIN_LIBSNDFILE


# ----------------------------------------------------------------------------- files


# libsndfile's wording -> what a user can act on (its own text repeats the path and, for a
# garbage file, guesses "possibly a pipe?").
_LIBSNDFILE_REASONS = (
    ("unknown format", "not a recognised audio format, or a damaged file"),
    ("format not recognised", "not a recognised audio format, or a damaged file"),
    ("possibly a pipe", "not a recognised audio format, or a damaged file"),
    ("unimplemented format", "an audio encoding libsndfile cannot read"),
    ("no such file", "the file does not exist"),
    ("permission denied", "the file cannot be read (permission denied)"),
)


def _plain_reason(err: BaseException) -> str:
    """A short reason for a decoding failure, without the path libsndfile puts in front."""
    text = str(err)
    lowered = text.lower()
    for marker, reason in _LIBSNDFILE_REASONS:
        if marker in lowered:
            return reason
    return re.sub(r"^Error opening .*?: ", "", text).strip().rstrip(".") or type(err).__name__


def decode_audio(
    path: str | os.PathLike, sample_rate: int, max_seconds: float | None = 600.0
) -> DecodedAudio:
    """Decode an audio file to mono float32 at ``sample_rate``.

    WAV, FLAC, OGG/Vorbis, MP3 (libsndfile 1.1+) and the other formats libsndfile knows are
    read. Channels are averaged to mono, then soxr (quality "HQ") resamples. At most
    ``max_seconds`` of audio are read from the file, so a huge file is never decoded whole;
    ``truncated`` says whether it was cut. Silent audio is returned as is (see ``is_silent``).

    Args:
        path: the audio file.
        sample_rate: the rate to return, in Hz.
        max_seconds: read at most this much audio (None: everything).

    Returns:
        DecodedAudio with ``waveform`` (S,) float32.

    Raises:
        AudioError: missing, empty, corrupt or unsupported file; no samples; NaN/inf samples;
            an absurd sample rate.
    """
    target_rate = _check_rate(sample_rate, "sample_rate")
    max_seconds = _check_max_seconds(max_seconds)
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path} (check the path and the working directory)")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}; re-export or re-download it")
    is_mp3 = path.suffix.lower() in {".mp3", ".mpga", ".mpeg"}
    if is_mp3 and not mp3_supported():
        raise AudioError(
            f"cannot decode {path}: this libsndfile ({soundfile.__libsndfile_version__}) has no MP3"
            " support; upgrade soundfile (pip install -U 'soundfile>=0.12', which bundles"
            " libsndfile 1.1+) or convert the file to WAV/FLAC"
        )
    try:
        with soundfile.SoundFile(str(path)) as f:
            source_rate = int(f.samplerate)
            channels = int(f.channels)
            if not MIN_SAMPLE_RATE <= source_rate <= MAX_SAMPLE_RATE:
                raise AudioError(
                    f"{path} declares a sample rate of {source_rate} Hz, outside"
                    f" {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; the header is probably corrupt"
                )
            limit = None if max_seconds is None else max(1, round(max_seconds * source_rate))
            to_read = f.frames if limit is None else min(f.frames, limit)
            data = f.read(frames=max(int(to_read), 0), dtype="float32", always_2d=True)  # (S, C)
            # Frame counts of compressed formats can be estimates: peek one frame past the
            # limit to know for sure whether audio was left out.
            truncated = limit is not None and len(data) >= limit and len(f.read(frames=1)) > 0
    except AudioError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, OSError) as err:
        hint = (
            " Supported: WAV, FLAC, OGG/Vorbis, MP3, AIFF and other libsndfile formats; convert"
            " others (e.g. `ffmpeg -i INPUT output.flac`)."
        )
        raise AudioError(f"cannot decode {path} as audio: {_plain_reason(err)}.{hint}") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path} contains no audio samples (zero length)")
    waveform = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]  # (S,)
    _check_finite(waveform, str(path))
    waveform = _resample(waveform, source_rate, target_rate)
    return DecodedAudio(
        waveform=waveform,
        sample_rate=target_rate,
        duration_s=waveform.shape[0] / target_rate,
        source_sample_rate=source_rate,
        source_channels=channels,
        truncated=bool(truncated),
    )


def load_audio(
    path: str | os.PathLike, sample_rate: int, max_seconds: float | None = 600.0
) -> np.ndarray:
    """Decode a file to a mono float32 waveform at ``sample_rate`` (see ``decode_audio``).

    Emits an ``AudioTruncatedWarning`` when the file is longer than ``max_seconds``.

    Returns:
        (S,) float32.
    """
    decoded = decode_audio(path, sample_rate, max_seconds)
    if decoded.truncated:
        warnings.warn(
            f"{path} is longer than {max_seconds:g} s; only its first {max_seconds:g} s are used",
            AudioTruncatedWarning,
            stacklevel=2,
        )
    return decoded.waveform


# ----------------------------------------------------------------------------- arrays


def _to_float(array: np.ndarray) -> np.ndarray:
    """Integer PCM -> float32 in [-1, 1); float -> float32."""
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind == "i":
        # Full scale of a signed integer is 2**(bits-1), as in WAV.
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if kind == "u":
        # Unsigned PCM (8-bit WAV) is offset binary: the midpoint is silence.
        mid = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - mid) / mid).astype(np.float32)
    raise AudioError(
        f"audio samples must be integer PCM or floating point, got dtype {array.dtype}"
    )


def prepare_waveform(
    array: np.ndarray | torch.Tensor | list,
    sr: int,
    target_sr: int,
    *,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Turn an in-memory recording into a mono float32 waveform at ``target_sr``.

    Accepts int8/16/32/64 PCM (scaled by full scale), uint8 (offset binary) or float arrays,
    shaped (S,), (S, C) or (C, S); the channel axis is the shorter one, and channels are
    averaged. A Gradio microphone value ``(sr, array)`` maps to ``prepare_waveform(array, sr, ...)``.

    Args:
        array: the samples.
        sr: their sample rate in Hz.
        target_sr: the rate to return.
        max_seconds: if given, keep only the first ``max_seconds`` (AudioTruncatedWarning).

    Returns:
        (S,) float32, C-contiguous.

    Raises:
        AudioError: empty array, more than 2 dimensions, NaN/inf, bad dtype or sample rate.
    """
    source_rate = _check_rate(sr, "sr")
    target_rate = _check_rate(target_sr, "target_sr")
    max_seconds = _check_max_seconds(max_seconds)
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as err:
        raise AudioError(f"cannot read audio samples from {type(array).__name__}: {err}") from err
    if array.size == 0:
        raise AudioError("the audio array is empty (zero samples); record or load some audio first")
    if array.ndim == 2:
        if min(array.shape) > MAX_CHANNELS:
            raise AudioError(
                f"an audio array of shape {array.shape} has no channel axis (at most"
                f" {MAX_CHANNELS} channels); pass one recording shaped (S,), (S, C) or (C, S)"
            )
        channel_axis = 1 if array.shape[1] <= array.shape[0] else 0
        array = _to_float(array)
        waveform = array.mean(axis=channel_axis, dtype=np.float32)  # (S,)
    elif array.ndim == 1:
        waveform = _to_float(array)
    else:
        raise AudioError(
            f"an audio array must be shaped (S,), (S, C) or (C, S); got {array.ndim} dimensions"
            f" {tuple(array.shape)}"
        )
    _check_finite(waveform, "the audio array")
    if max_seconds is not None:
        limit = max(1, round(max_seconds * source_rate))
        if waveform.shape[0] > limit:
            warnings.warn(
                f"audio of {waveform.shape[0] / source_rate:.1f} s is longer than"
                f" {max_seconds:g} s; only its first {max_seconds:g} s are used",
                AudioTruncatedWarning,
                stacklevel=2,
            )
            waveform = waveform[:limit]
    return _resample(waveform, source_rate, target_rate)


def is_silent(waveform: np.ndarray | torch.Tensor, threshold_db: float = -80.0) -> bool:
    """True when the peak level is below ``threshold_db`` dBFS (all-zero audio is silent).

    Decoding never rejects silence; callers decide what to do with it (e.g. warn the user).

    Args:
        waveform: samples in [-1, 1] full scale, any shape.
        threshold_db: the peak level, in dB relative to full scale, below which it is silent.
    """
    if isinstance(waveform, torch.Tensor):
        peak = float(waveform.detach().abs().max()) if waveform.numel() else 0.0
    else:
        waveform = np.asarray(waveform)
        peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    if peak == 0.0:
        return True
    return 20.0 * math.log10(peak) < threshold_db


# ----------------------------------------------------------------------------- length policy


def _check_length(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AudioError(f"{name} must be a positive whole number of samples, got {value!r}")
    return int(value)


def _pad_end(waveform: ArrayT, num_samples: int) -> ArrayT:
    """Zero-pad the last axis at the end up to ``num_samples``."""
    missing = num_samples - waveform.shape[-1]
    if missing <= 0:
        return waveform
    if isinstance(waveform, torch.Tensor):
        return F.pad(waveform, (0, missing))
    widths = [(0, 0)] * (waveform.ndim - 1) + [(0, missing)]
    return np.pad(waveform, widths)


def pad_or_crop(waveform: ArrayT, num_samples: int, mode: str = "center") -> ArrayT:
    """Make the last axis exactly ``num_samples`` long, deterministically.

    Shorter input is zero-padded at the end; longer input is cropped: ``"center"`` keeps the
    middle (the start index is ``(S - num_samples) // 2``), ``"start"`` keeps the beginning.

    Args:
        waveform: (..., S) numpy array or torch tensor.
        num_samples: the output length.
        mode: "center" | "start".

    Returns:
        (..., num_samples), same type as the input.
    """
    num_samples = _check_length(num_samples, "num_samples")
    if mode not in ("center", "start"):
        raise AudioError(f"mode must be 'center' or 'start', got {mode!r}")
    length = waveform.shape[-1]
    if length <= num_samples:
        return _pad_end(waveform, num_samples)
    start = (length - num_samples) // 2 if mode == "center" else 0
    return waveform[..., start : start + num_samples]


def window_starts(num_samples: int, window: int, hop: int, tail: str = "pad") -> list[int]:
    """Start indices of the windows ``split_windows`` cuts (at least one)."""
    window = _check_length(window, "window")
    hop = _check_length(hop, "hop")
    if tail not in ("pad", "end"):
        raise AudioError(f"tail must be 'pad' or 'end', got {tail!r}")
    if num_samples <= window:
        return [0]
    if tail == "pad":
        count = 1 + math.ceil((num_samples - window) / hop)
        return [i * hop for i in range(count)]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)  # one more window, flush with the end
    return starts


def split_windows(waveform: ArrayT, window: int, hop: int, tail: str = "pad") -> ArrayT:
    """Cut a waveform into windows of ``window`` samples every ``hop`` samples.

    There is always at least one window; input shorter than ``window`` is zero-padded.
    ``tail`` decides what happens to audio left after the last full window: ``"pad"`` adds one
    more window that is zero-padded at the end; ``"end"`` adds one more window flush with the
    end of the audio (it overlaps its neighbour more, but holds no padding).

    Args:
        waveform: (S,) numpy array or torch tensor.
        window: window length in samples.
        hop: hop between window starts in samples.
        tail: "pad" | "end".

    Returns:
        (W, window), same type as the input (a copy for numpy).
    """
    if waveform.ndim != 1:
        raise AudioError(f"split_windows expects a 1-D waveform (S,), got shape {tuple(waveform.shape)}")
    starts = window_starts(waveform.shape[0], window, hop, tail)
    padded = _pad_end(waveform, starts[-1] + window)
    if isinstance(padded, torch.Tensor):
        return torch.stack([padded[s : s + window] for s in starts])  # (W, window)
    return np.stack([padded[s : s + window] for s in starts])  # (W, window)
