"""Log-mel front ends in pure torch: waveforms (B, S) -> log-mel frames (B, T, M).

One module, ``LogMel``, configured by ``LogMelConfig``, reproduces both the PANNs front end
(torchlibrosa: Slaney mel, dB) and the aisfx one (HTK mel, unit-sum filters, log10(1 + 1e4 x)).
The mel filterbank follows librosa's conventions and is built here, so neither librosa nor
torchaudio is needed. No file access, no device choice: the module follows its input.

Shapes: B batch, S samples, F = n_fft // 2 + 1 frequency bins, T frames, M mel bands.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from diffatr.config import LogMelConfig

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", "l1", None)
PAD_MODES = ("reflect", "constant")
COMPRESSIONS = ("db", "log10_1p")

# Slaney's auditory-toolbox mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic
# above, with 27 mels per factor 6.4 in frequency (librosa's default, htk=False).
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15.0
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """Frequencies in Hz -> mels (float64). ``"htk"``: 2595 log10(1 + f / 700)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freqs / 700.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, got {scale!r}")
    linear = freqs / _SLANEY_F_SP
    # np.maximum keeps log() finite on the branch np.where discards.
    log_part = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(freqs, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(freqs >= _SLANEY_MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mels: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """Mels -> frequencies in Hz (float64); the inverse of ``hz_to_mel``."""
    mels = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, got {scale!r}")
    linear = mels * _SLANEY_F_SP
    log_part = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL))
    return np.where(mels >= _SLANEY_MIN_LOG_MEL, log_part, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    scale: str = "slaney",
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters, librosa's ``filters.mel`` construction.

    Band edges are ``n_mels + 2`` points evenly spaced in mel between ``f_min`` and ``f_max``;
    filter m rises linearly (in Hz) from edge m to m+1 and falls to edge m+2.
    ``norm="slaney"`` scales filter m by 2 / (edge[m+2] - edge[m]) (constant energy per
    band, librosa's default); ``"l1"`` divides each filter by its sum over FFT bins (unit sum,
    as Essentia's ``unit_sum`` and ``librosa ... norm=1``); None leaves peaks at 1. A filter
    that covers no FFT bin stays all-zero.

    Returns:
        (F, M) float64, F = n_fft // 2 + 1: multiply a power spectrum (..., F) by it.
    """
    if norm not in MEL_NORMS:
        raise ValueError(f"mel norm must be one of {MEL_NORMS}, got {norm!r}")
    fft_freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sample_rate / n_fft)  # (F,)
    edges_mel = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    edges = mel_to_hz(edges_mel, scale)  # (M + 2,)
    widths = np.diff(edges)  # (M + 1,)
    ramps = edges[:, None] - fft_freqs[None, :]  # (M + 2, F)
    rising = -ramps[:-2] / widths[:-1, None]  # (M, F)
    falling = ramps[2:] / widths[1:, None]  # (M, F)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (M, F)
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    elif norm == "l1":
        sums = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)
    return np.ascontiguousarray(weights.T)  # (F, M)


def check_logmel_config(config: LogMelConfig) -> None:
    """Raise ValueError naming the first unusable field of ``config``."""
    problems = []
    if config.sample_rate <= 0:
        problems.append(f"sample_rate must be positive (got {config.sample_rate})")
    if config.n_fft < 2:
        problems.append(f"n_fft must be >= 2 (got {config.n_fft})")
    if config.hop_length < 1:
        problems.append(f"hop_length must be >= 1 (got {config.hop_length})")
    if config.n_mels < 1:
        problems.append(f"n_mels must be >= 1 (got {config.n_mels})")
    if not 0 <= config.f_min < config.f_max <= config.sample_rate / 2:
        problems.append(
            f"need 0 <= f_min < f_max <= sample_rate / 2 (got f_min={config.f_min},"
            f" f_max={config.f_max}, sample_rate={config.sample_rate})"
        )
    if config.mel_scale not in MEL_SCALES:
        problems.append(f"mel_scale must be one of {MEL_SCALES} (got {config.mel_scale!r})")
    if config.mel_norm not in MEL_NORMS:
        problems.append(f"mel_norm must be one of {MEL_NORMS} (got {config.mel_norm!r})")
    if config.pad_mode not in PAD_MODES:
        problems.append(f"pad_mode must be one of {PAD_MODES} (got {config.pad_mode!r})")
    if config.compression not in COMPRESSIONS:
        problems.append(f"compression must be one of {COMPRESSIONS} (got {config.compression!r})")
    if config.power <= 0:
        problems.append(f"power must be positive (got {config.power})")
    if config.amin <= 0 or config.compression_scale <= 0 or config.output_scale <= 0:
        problems.append("amin, compression_scale and output_scale must be positive")
    if problems:
        raise ValueError("invalid LogMelConfig: " + "; ".join(problems))


class LogMel(nn.Module):
    """Waveforms -> log-mel spectrogram frames, time-major.

    Steps: optional peak normalisation per waveform (max |x| -> 1; silence stays zero),
    STFT with a periodic Hann window of ``n_fft`` samples every ``hop_length`` samples
    (``center`` pads ``n_fft // 2`` on both sides with ``pad_mode``), |X|^power, mel filters,
    then ``"db"``: 10 log10(max(x, amin)) or ``"log10_1p"``: log10(1 + scale x), divided by
    ``output_scale``. With ``center`` there are ``1 + S // hop_length`` frames
    (PANNs: 10 s at 32 kHz -> 1001 x 64).

    The window and filterbank are non-persistent buffers: they are rebuilt from the config
    and never appear in a state dict.
    """

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__()
        check_logmel_config(config)
        self.config = config
        window = torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64)
        filters = mel_filterbank(
            config.sample_rate, config.n_fft, config.n_mels, config.f_min, config.f_max,
            config.mel_scale, config.mel_norm,
        )
        self.register_buffer("window", window.float(), persistent=False)  # (n_fft,)
        self.register_buffer("mel_filters", torch.from_numpy(filters).float(), persistent=False)  # (F, M)

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples`` samples."""
        cfg = self.config
        if cfg.center:
            return 1 + num_samples // cfg.hop_length
        return 1 + (num_samples - cfg.n_fft) // cfg.hop_length if num_samples >= cfg.n_fft else 0

    def min_samples(self, num_frames: int = 1) -> int:
        """The shortest waveform that gives at least ``num_frames`` frames and is valid input."""
        cfg = self.config
        if cfg.center:
            needed = (num_frames - 1) * cfg.hop_length
            if cfg.pad_mode == "reflect":
                needed = max(needed, cfg.n_fft // 2 + 1)  # reflection needs more than the pad
            return max(needed, 1)
        return cfg.n_fft + (num_frames - 1) * cfg.hop_length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Compute log-mel frames.

        Args:
            waveforms: (B, S) float, at ``config.sample_rate``.

        Returns:
            (B, T, M) in the dtype of the module's buffers (float32 unless converted).
        """
        cfg = self.config
        if waveforms.ndim != 2:
            raise ValueError(f"LogMel expects waveforms shaped (B, S), got {tuple(waveforms.shape)}")
        if not waveforms.is_floating_point():
            raise ValueError(f"LogMel expects float waveforms, got {waveforms.dtype}")
        num_samples = waveforms.shape[1]
        if num_samples < self.min_samples():
            raise ValueError(
                f"a waveform of {num_samples} samples is too short for this front end"
                f" (n_fft={cfg.n_fft}, center={cfg.center}, pad_mode={cfg.pad_mode!r}); pad it"
                f" to at least {self.min_samples()} samples (diffatr.audio.io.pad_or_crop)"
            )
        x = waveforms.to(self.mel_filters.dtype)  # (B, S)
        if cfg.peak_normalize:
            peak = x.abs().amax(dim=1, keepdim=True)  # (B, 1)
            # Dividing silence by its zero peak would give NaN; leave it silent instead.
            x = x / torch.where(peak > 0, peak, torch.ones_like(peak))
        spec = torch.stft(
            x,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.n_fft,
            window=self.window,
            center=cfg.center,
            pad_mode=cfg.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (B, F, T)
        if cfg.power == 2.0:
            power = spec.real.square() + spec.imag.square()  # (B, F, T), exact |X|^2
        else:
            power = spec.abs().pow(cfg.power)
        mel = torch.matmul(power.transpose(1, 2), self.mel_filters)  # (B, T, M)
        if cfg.compression == "db":
            out = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
        else:
            # log1p keeps precision for the many near-silent bins where scale * x << 1.
            out = torch.log1p(cfg.compression_scale * mel) / math.log(10.0)
        if cfg.output_scale != 1.0:
            out = out / cfg.output_scale
        return out  # (B, T, M)
