"""Signal processing for the corpus build: silence trimming, 10-second crops, clipping
detection, EBU R128 / ITU-R BS.1770 loudness and normalisation, and Ogg/Opus encoding.

Everything works on mono float32 numpy arrays at ``SAMPLE_RATE`` (48 kHz, the rate Opus
codes natively) and returns new arrays; nothing here reads or writes files. The K-weighting
filter runs in the frequency domain, so numpy is all it needs.

Shapes: S samples.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile

SAMPLE_RATE = 48_000
TARGET_LUFS = -23.0          # EBU R128 programme loudness
PEAK_CEILING_DBFS = -1.0     # never push a sample above this when normalising
MAX_GAIN_DB = 40.0           # a clip that needs more is noise, not a quiet recording
# libsndfile maps its compression level linearly onto the Opus bitrate (0.0 ~ 256 kb/s,
# 1.0 ~ 6 kb/s per channel); 0.89 gives ~32 kb/s mono, transparent enough for 48 kHz
# effects while keeping ~1,200 clips around 20 MB.
OPUS_COMPRESSION_LEVEL = 0.89


# ----------------------------------------------------------------------------- basics


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(S,) or (S, C) -> (S,) float32 by averaging channels."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected (S,) or (S, C) audio, got shape {audio.shape}")
    return np.ascontiguousarray(audio)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) at ``rate`` -> (S',) at ``target`` (soxr, high quality)."""
    if rate == target:
        return audio.astype(np.float32, copy=True)
    import soxr

    return soxr.resample(audio.astype(np.float32), rate, target, quality="HQ").astype(np.float32)


def fade(audio: np.ndarray, rate: int, fade_in_s: float = 0.005, fade_out_s: float = 0.005) -> np.ndarray:
    """Raised-cosine fades so that cut edges do not click."""
    out = audio.astype(np.float32, copy=True)
    for length, edge in ((int(fade_in_s * rate), "in"), (int(fade_out_s * rate), "out")):
        length = min(length, len(out) // 2)
        if length <= 1:
            continue
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length))).astype(np.float32)
        if edge == "in":
            out[:length] *= ramp
        else:
            out[-length:] *= ramp[::-1]
    return out


# ----------------------------------------------------------------------------- trimming


def active_bounds(audio: np.ndarray, rate: int, floor_db: float = -50.0, absolute_db: float = -70.0,
                  frame_s: float = 0.01) -> tuple[int, int] | None:
    """First and last sample of the non-silent part, or None for an all-silent clip.

    A 10 ms frame is active when its RMS is within ``floor_db`` of the loudest frame and
    above ``absolute_db`` dBFS.
    """
    frame = max(1, int(frame_s * rate))
    count = len(audio) // frame
    if count == 0:
        return None
    frames = audio[:count * frame].reshape(count, frame)  # (F, frame)
    rms_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    threshold = max(rms_db.max() + floor_db, absolute_db)
    active = np.flatnonzero(rms_db > threshold)
    if active.size == 0:
        return None
    return int(active[0] * frame), int(min(len(audio), (active[-1] + 1) * frame))


def trim_silence(audio: np.ndarray, rate: int, pad_s: float = 0.02, **kwargs) -> np.ndarray:
    """Cut leading and trailing silence, keeping ``pad_s`` around the active part.

    Returns an empty array when the clip is silent throughout.
    """
    bounds = active_bounds(audio, rate, **kwargs)
    if bounds is None:
        return audio[:0].copy()
    pad = int(pad_s * rate)
    start, end = max(0, bounds[0] - pad), min(len(audio), bounds[1] + pad)
    return fade(audio[start:end], rate)


# ----------------------------------------------------------------------------- crops


def crop_offsets(duration_s: float, count: int, length_s: float = 10.0) -> list[float]:
    """Start times (s) of up to ``count`` non-overlapping ``length_s`` crops spread evenly
    over a recording of ``duration_s``; ``[0.0]`` when it is no longer than one crop."""
    if duration_s <= length_s or count <= 1:
        return [0.0]
    count = max(1, min(count, int(duration_s // length_s)))
    if count == 1:
        return [0.0]
    span = duration_s - length_s
    return [round(span * k / (count - 1), 2) for k in range(count)]


def take_crop(audio: np.ndarray, rate: int, start_s: float, length_s: float = 10.0) -> np.ndarray:
    """``length_s`` seconds from ``start_s`` with short fades at the cut edges."""
    start = round(start_s * rate)
    piece = audio[start:start + round(length_s * rate)]
    cut_in = start > 0
    cut_out = start + len(piece) < len(audio)
    return fade(piece, rate, 0.02 if cut_in else 0.0, 0.05 if cut_out else 0.0)


# ----------------------------------------------------------------------------- clipping


def clipped_fraction(audio: np.ndarray, run: int = 3, level: float = 0.995) -> float:
    """Fraction of samples that sit in flat-topped runs (>= ``run`` consecutive samples at
    >= ``level`` of full scale, or of the clip's own peak when the peak is nearly full scale).

    Heavy clipping shows as long runs of identical extreme samples; a clean peak touches
    full scale for a sample or two at most.
    """
    if audio.size == 0:
        return 0.0
    peak = float(np.max(np.abs(audio)))
    if peak < 0.9:
        return 0.0
    hot = np.abs(audio) >= level * min(1.0, peak)
    # Length of the run each hot sample belongs to.
    edges = np.diff(np.concatenate(([0], hot.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    return float(lengths[lengths >= run].sum()) / audio.size


# ----------------------------------------------------------------------------- loudness

# ITU-R BS.1770-4 K-weighting at 48 kHz: a high shelf (head effects) then the RLB high-pass.
_SHELF_B = (1.53512485958697, -2.69169618940638, 1.19839281085285)
_SHELF_A = (1.0, -1.69065929318241, 0.73248077421585)
_HIGHPASS_B = (1.0, -2.0, 1.0)
_HIGHPASS_A = (1.0, -1.99004745483398, 0.99007225036621)


def k_weight(audio: np.ndarray) -> np.ndarray:
    """(S,) at 48 kHz -> (S,) float64 K-weighted (the two BS.1770 biquads in cascade).

    Applied in the frequency domain with enough zero padding that the filters' impulse
    responses (the slowest pole has radius 0.995, so it decays by 1e-6 within 2,800
    samples) never wrap around: the result equals a causal IIR filter from rest, without
    needing scipy.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size == 0:
        return audio
    size = 1 << int(np.ceil(np.log2(audio.size + 4096)))
    z = np.exp(-1j * np.pi * np.arange(size // 2 + 1) / (size // 2))  # e^{-jw} on the rfft grid

    def response(b: tuple[float, ...], a: tuple[float, ...]) -> np.ndarray:
        return (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)

    spectrum = np.fft.rfft(audio, size) * response(_SHELF_B, _SHELF_A) * response(_HIGHPASS_B, _HIGHPASS_A)
    return np.fft.irfft(spectrum, size)[: audio.size]


def integrated_loudness(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Gated integrated loudness in LUFS (ITU-R BS.1770-4, mono).

    400 ms blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU
    below the ungated mean. Clips shorter than one block are measured as a single block, so
    short effects get a loudness too. Returns -inf for digital silence.

    Raises:
        ValueError: a rate other than 48 kHz (the filter coefficients are the 48 kHz ones).
    """
    if rate != SAMPLE_RATE:
        raise ValueError(f"integrated_loudness expects {SAMPLE_RATE} Hz audio, got {rate} Hz; resample first")
    weighted = k_weight(audio)
    block, step = int(0.4 * rate), int(0.1 * rate)
    if len(weighted) <= block:
        powers = np.array([np.mean(weighted ** 2)])
    else:
        squares = np.concatenate(([0.0], np.cumsum(weighted ** 2)))
        starts = np.arange(0, len(weighted) - block + 1, step)
        powers = (squares[starts + block] - squares[starts]) / block
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10.0 * np.log10(powers)
    gated = powers[loudness > -70.0]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10.0 * np.log10(gated.mean()) - 10.0
    with np.errstate(divide="ignore"):
        final = gated[-0.691 + 10.0 * np.log10(gated) > relative]
    return float(-0.691 + 10.0 * np.log10(final.mean()))


@dataclass(frozen=True)
class Normalised:
    """The result of ``normalise_loudness``."""

    audio: np.ndarray          # (S,) float32
    loudness_in: float         # LUFS before
    loudness_out: float        # LUFS after
    gain_db: float
    peak_limited: bool         # the peak ceiling, not the target, set the gain


def normalise_loudness(audio: np.ndarray, rate: int = SAMPLE_RATE, target_lufs: float = TARGET_LUFS,
                       peak_ceiling_dbfs: float = PEAK_CEILING_DBFS) -> Normalised:
    """Scale to ``target_lufs`` unless that would push the sample peak over the ceiling, in
    which case the ceiling sets the gain (and the clip stays quieter than the target).

    Raises:
        ValueError: a silent clip (no loudness to normalise).
    """
    loudness = integrated_loudness(audio, rate)
    if not np.isfinite(loudness):
        raise ValueError("cannot normalise a silent clip")
    gain_db = min(target_lufs - loudness, MAX_GAIN_DB)
    peak = float(np.max(np.abs(audio)))
    ceiling_gain_db = peak_ceiling_dbfs - 20.0 * np.log10(max(peak, 1e-12))
    limited = gain_db > ceiling_gain_db
    gain_db = min(gain_db, ceiling_gain_db)
    out = (audio * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
    return Normalised(out, loudness, loudness + gain_db, float(gain_db), bool(limited))


# ----------------------------------------------------------------------------- encoding


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
            r &= 0xFFFFFFFF
        table.append(r)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(data: bytes | bytearray) -> int:
    crc = 0
    table = _OGG_CRC
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) ^ byte) & 0xFF]
    return crc


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Rewrite the stream serial number of every Ogg page (and the page CRCs).

    libsndfile draws the serial at random, so the same audio would give different bytes on
    every build; a serial derived from the clip id makes the build byte-reproducible.

    Raises:
        ValueError: bytes that are not a sequence of Ogg pages.
    """
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos:pos + 4] != b"OggS" or pos + 27 > len(out):
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = out[pos + 26]
        length = 27 + segments + sum(out[pos + 27:pos + 27 + segments])
        struct.pack_into("<I", out, pos + 14, serial & 0xFFFFFFFF)
        struct.pack_into("<I", out, pos + 22, 0)
        struct.pack_into("<I", out, pos + 22, _ogg_crc(out[pos:pos + length]))
        pos += length
    return bytes(out)


def serial_for(name: str) -> int:
    """A stable 32-bit Ogg serial for a clip id."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def encode_opus(audio: np.ndarray, name: str, rate: int = SAMPLE_RATE,
                compression_level: float = OPUS_COMPRESSION_LEVEL) -> bytes:
    """Mono Ogg/Opus bytes for (S,) float32 audio at 48 kHz, byte-identical across runs."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0).astype(np.float32), rate, format="OGG",
                    subtype="OPUS", compression_level=compression_level)
    return set_ogg_serial(buffer.getvalue(), serial_for(name))
