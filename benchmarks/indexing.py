"""Indexing speed: clips per second and real-time factor of ``diffatr index``, on the built-in
corpus and on a synthetic folder of clips of 1-30 s, and what each lever of the pipeline gives.

    python benchmarks/indexing.py                          # everything: ~1.5 h on 2 cores, ~7 GB in /tmp
    python benchmarks/indexing.py --synthetic-clips 1000   # a smaller synthetic folder
    python benchmarks/indexing.py --quick                  # smoke run (writes nothing unless --out)

Sections:
- ``cnn``: the aisfx CNN alone, ms per block (one thread, CPU time): the module as written
  (BatchNorm after each conv, NCHW) against ``FoldedCNN9`` (folded, channels-last, with and
  without Winograd), under ``no_grad`` and ``inference_mode``, for several blocks per pass.
- ``levers``: the pipeline on a subset of the corpus, in this process: today's path (one file at
  a time: decode, ``embed_file``) against blocks of several clips, one or two worker processes,
  torch threads; each checked against today's features (cosine).
- ``overlap``: aiSFX's blocks overlap by half. Running the CNN once over a whole clip and
  pooling each block's rows from it is measured for speed and for how far its features move.
- ``ray``: the corpus through ``diffatr index --ray local`` with 1 and 2 Ray workers against 1 process.
- ``corpus`` and ``synthetic``: ``diffatr index FOLDER --no-cache`` end to end in a subprocess
  (start-up included), with its peak memory: a folder ten times larger must not need more.

Writes ``benchmarks/results/indexing.json`` (machine, settings, every number, the command) and
prints Markdown for the README. Timings on a shared machine are noisy: the load average before
and after is recorded, and CPU time beside wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.audio.io import decode_audio  # noqa: E402
from diffatr.config import AudioEncoderConfig  # noqa: E402
from diffatr.encoders import batched  # noqa: E402
from diffatr.encoders.audio import build_audio_encoder, embed_file  # noqa: E402
from diffatr.extraction import Extractor  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.machine import cpu_label, describe_cpu  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "indexing.json"
CORPUS = ROOT / "assets" / "corpus" / "clips"
FLOOR_REAL_TIME = 200.0  # issue 22: indexing at least 200x real time on 2 cores
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def audio_seconds(paths: list[Path], max_seconds: float) -> float:
    return sum(min(sf.info(str(p)).duration, max_seconds) for p in paths)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process and its waited-for children; worker
    processes started by a fork server are not this process's children and are not counted)."""
    def cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    wall, start = time.perf_counter(), cpu()
    result = fn()
    return result, time.perf_counter() - wall, cpu() - start


# ----------------------------------------------------------------------------- the CNN alone


def cnn_section(encoder, batches: list[int], repeats: int) -> list[dict[str, Any]]:
    backbone = encoder.backbone
    folded = batched.FoldedCNN9(backbone)  # the default: Winograd from layer WINOGRAD_FROM_LAYER
    direct = batched.FoldedCNN9(backbone, winograd_from=8)
    early = batched.FoldedCNN9(backbone, winograd_from=2)
    nchw = batched.FoldedCNN9(backbone, winograd_from=8)
    nchw.layers = [(w.contiguous(), b) for w, b in nchw.layers]
    nchw_call = _nchw_forward(nchw)
    g = torch.Generator().manual_seed(0)
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in batches:
            blocks = 2 * torch.rand(batch, 100, 96, generator=g)
            variants = {"module as written (BN separate, NCHW)": lambda: backbone.embed_blocks(blocks),
                        "BN folded, NCHW": lambda: nchw_call(blocks),
                        "BN folded, channels-last": lambda: direct(blocks),
                        f"BN folded, channels-last, Winograd from conv {batched.WINOGRAD_FROM_LAYER + 1} (default)":
                            lambda: folded(blocks),
                        "BN folded, channels-last, Winograd from conv 3": lambda: early(blocks)}
            for name, fn in variants.items():
                for mode_name, mode in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
                    with mode():
                        fn()  # warm-up: oneDNN builds its kernels for this shape
                        best = min(timed(fn)[2] for _ in range(repeats))
                    rows.append({"variant": name, "mode": mode_name, "blocks_per_pass": batch,
                                 "cpu_ms_per_block": 1000 * best / batch})
                    log(f"cnn: {name}, {mode_name}, {batch} blocks/pass: {rows[-1]['cpu_ms_per_block']:.1f} ms/block")
    finally:
        torch.set_num_threads(threads)
    return rows


def _nchw_forward(net: batched.FoldedCNN9) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(blocks: torch.Tensor) -> torch.Tensor:
        x = blocks.unsqueeze(1)
        for index, (weight, bias) in enumerate(net.layers):
            x = F.conv2d(x, weight, bias, padding=1).relu_()
            if index in (1, 3, 5):
                x = F.max_pool2d(x, kernel_size=2)
        return x.mean(dim=3).amax(dim=2)
    return forward


# ----------------------------------------------------------------------------- pipeline levers


def levers_section(encoder, paths: list[Path], seconds: float) -> list[dict[str, Any]]:
    names = [str(p) for p in paths]
    threads = torch.get_num_threads()

    def today() -> list[torch.Tensor]:  # the code path before issue 22: one file at a time
        with torch.no_grad():
            return [embed_file(encoder, p).float() for p in names]

    def extractor(workers: int, batch_blocks: int = batched.DEFAULT_BATCH_BLOCKS, threads_: int | None = None):
        def run() -> list[torch.Tensor]:
            with Extractor(encoder, workers, batch_blocks=batch_blocks, threads=threads_) as ex:
                return list(ex.map(names))
        return run

    def decode_only() -> list[int]:
        return [decode_audio(p, encoder.sample_rate, max_seconds=encoder.config.max_seconds).waveform.shape[0]
                for p in names]

    variants: list[tuple[str, Callable[[], Any]]] = [
        ("decode only (this process, no CNN)", decode_only),
        (f"today: one file at a time, this process, {threads} threads", today),
        (f"blocks of 1 clip-block per pass, this process, {threads} threads", extractor(0, 1)),
        (f"blocks of 8 per pass, this process, {threads} threads", extractor(0, 8)),
        (f"blocks of 32 per pass, this process, {threads} threads", extractor(0, 32)),
        ("1 worker process, 2 threads, 8 per pass", extractor(1, 8, 2)),
        ("2 worker processes, 1 thread each, 8 per pass (the default)", extractor(2, 8, 1)),
        ("2 worker processes, 1 thread each, 32 per pass", extractor(2, 32, 1)),
    ]
    reference = None
    rows = []
    for name, fn in variants:
        result, wall, cpu = timed(fn)
        row = {"variant": name, "clips": len(paths), "audio_s": seconds, "wall_s": wall,
               "cpu_s": None if "worker" in name else cpu,  # a fork server's children are not ours to count
               "clips_per_s": len(paths) / wall, "real_time_factor": seconds / wall}
        if name.startswith("today"):
            reference = torch.stack(result)
        elif reference is not None and not name.startswith("decode"):
            got = torch.stack(result)
            row["max_cosine_gap_to_today"] = float((1 - F.cosine_similarity(got, reference, dim=-1)).abs().max())
        rows.append(row)
        log(f"levers: {name}: {wall:.1f} s ({row['clips_per_s']:.1f} clips/s, {row['real_time_factor']:.0f}x real time"
            + (f", cosine gap {row['max_cosine_gap_to_today']:.1e}" if "max_cosine_gap_to_today" in row else "") + ")")
    return rows


# ----------------------------------------------------------------------------- overlap


@torch.no_grad()
def overlap_section(encoder, paths: list[Path]) -> dict[str, Any]:
    """The CNN once over each whole clip, each block pooled from its rows of the shared map,
    against the exact path (every block through the CNN on its own)."""
    net = batched.FoldedCNN9(encoder.backbone)
    backbone = encoder.backbone
    waves = [decode_audio(str(p), encoder.sample_rate, max_seconds=encoder.config.max_seconds).waveform for p in paths]

    def exact() -> list[torch.Tensor]:
        return [e for _, e in batched.embed_clips(encoder, enumerate(waves))]

    def shared() -> list[torch.Tensor]:
        out = []
        for wave in waves:
            logmel = encoder._log_mel(encoder._prepare(wave)[None])  # (1, T, M)
            frames = logmel.shape[1]
            starts = list(range(0, max(1, frames - backbone.block + 1), backbone.hop))
            padded = F.pad(logmel, (0, 0, 0, max(0, starts[-1] + backbone.block - frames)))
            x = padded.unsqueeze(1).contiguous(memory_format=torch.channels_last)
            for index, (weight, bias) in enumerate(net.layers):
                x = F.conv2d(x, weight, bias, padding=1).relu_()
                if index in (1, 3, 5):
                    x = F.max_pool2d(x, kernel_size=2)
            rows = x.mean(dim=3)[0]  # (512, T/8): mean over frequency
            scale = rows.shape[1] / padded.shape[1]
            blocks = [rows[:, math.floor(s * scale): max(math.floor(s * scale) + 1, math.floor((s + backbone.block) * scale))]
                      .amax(dim=1) for s in starts]
            out.append(torch.stack(blocks).mean(dim=0))
        return out

    exact_out, exact_wall, exact_cpu = timed(exact)
    shared_out, shared_wall, shared_cpu = timed(shared)
    gap = (1 - F.cosine_similarity(torch.stack(shared_out), torch.stack(exact_out), dim=-1)).abs()
    result = {"clips": len(paths), "exact_cpu_s": exact_cpu, "shared_cpu_s": shared_cpu,
              "speed_up": exact_cpu / max(shared_cpu, 1e-9), "max_cosine_gap": float(gap.max()),
              "median_cosine_gap": float(gap.median())}
    log(f"overlap: shared map {result['speed_up']:.2f}x faster, cosine gap median {result['median_cosine_gap']:.1e}, "
        f"max {result['max_cosine_gap']:.1e}")
    return result


# ----------------------------------------------------------------------------- end to end


def run_index(folder: Path, seconds: float, clips: int, workers: int | None, extra: tuple[str, ...] = ()
              ) -> dict[str, Any]:
    """``diffatr index FOLDER --no-cache --no-text`` in a subprocess: wall time (start-up included),
    CPU time, and the peak memory of its largest process (parent or worker: Linux's wait4 reports
    the largest of a process and the children it waited for)."""
    out = Path(tempfile.mkdtemp(prefix="diffatr-index-bench-"))
    command = [sys.executable, "-m", "diffatr.cli", "index", str(folder), "--out", str(out / "index"),
               "--no-cache", "--no-text", "--quiet", *extra] + ([] if workers is None else ["--workers", str(workers)])
    # A local Ray cluster on this machine only: no authentication token written to ~/.ray, its
    # session files in the run's temporary folder.
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_TMPDIR=str(out)) if "--ray" in extra else None
    with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr, env=env)
        peak = {"rss": 0}
        sampler = threading.Thread(target=_sample_tree_rss, args=(process.pid, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        sampler.join()
    printed, errors = (out / "stdout").read_text(), (out / "stderr").read_text()
    shutil.rmtree(out, ignore_errors=True)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"diffatr index failed ({os.waitstatus_to_exitcode(status)}): {errors[-2000:]}")
    row = {"folder": str(folder), "clips": clips, "audio_s": seconds, "wall_s": wall, "workers": workers,
           "extra_args": list(extra),
           "cpu_s": usage.ru_utime + usage.ru_stime, "clips_per_s": clips / wall,
           "real_time_factor": seconds / wall,
           # What idle cores would give: the audio over the CPU time shared out between the cores
           # (the workers are this process's children and counted; Ray's actors are not).
           "real_time_factor_from_cpu_time": None if "--ray" in extra else
           seconds / max(1e-9, (usage.ru_utime + usage.ru_stime) / len(os.sched_getaffinity(0))),
           "peak_rss_mb_main_process": usage.ru_maxrss / 1024,
           "peak_rss_mb_all_processes": peak["rss"] / 2**20,
           "output": printed.strip().splitlines()[:1]}
    log(f"index {folder.name} {' '.join(extra)} (workers {workers}): {clips} clips, {seconds / 3600:.2f} h of audio in {wall:.1f} s: "
        f"{row['clips_per_s']:.1f} clips/s, {row['real_time_factor']:.0f}x real time, "
        f"peak RSS {row['peak_rss_mb_all_processes']:.0f} MB (all processes)")
    return row


def _sample_tree_rss(root: int, peak: dict[str, int], every: float = 0.25) -> None:
    """Sum the resident memory of ``root`` and its descendants (read from /proc) every
    ``every`` seconds until it exits; keep the peak in ``peak["rss"]`` (bytes)."""
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        if root not in parents:
            return
        tree, grown = {root}, True
        while grown:
            grown = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grown = True
        total = 0
        for pid in tree:
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                continue
        peak["rss"] = max(peak["rss"], total)
        time.sleep(every)


# ----------------------------------------------------------------------------- synthetic folder


def _synth_clip(args: tuple[int, int, str]) -> float:
    """Write synthetic clip ``index`` (seeded): 1-30 s of tones, band-passed noise and clicks."""
    index, seed, folder = args
    rng = np.random.default_rng([seed, index])
    kind = index % 3  # WAV 48 kHz (resampled on reading), FLAC 44.1 kHz, FLAC 48 kHz
    rate = 44100 if kind == 1 else 48000
    seconds = float(rng.uniform(1.0, 30.0))
    n = int(seconds * rate)
    wave = 0.003 * rng.standard_normal(n, dtype=np.float32)  # a noise floor
    for _ in range(rng.integers(1, 5)):  # sound events with an attack-decay envelope
        start = int(rng.uniform(0, seconds) * rate)
        decay = rng.uniform(0.03, 0.3 * seconds)  # seconds
        m = min(n - start, int(5 * decay * rate) + 1)  # the event has faded by then
        t = np.arange(m, dtype=np.float32) / rate
        envelope = np.minimum(t / 0.02, 1.0) * np.exp(-t / decay)
        if rng.random() < 0.5:  # a harmonic tone
            f0 = rng.uniform(80, 2000)
            event = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 5))
        else:  # band-passed noise (wind, rain, engines, water)
            spectrum = np.fft.rfft(rng.standard_normal(m, dtype=np.float32))
            freqs = np.fft.rfftfreq(m, 1 / rate)
            low = rng.uniform(50, 4000)
            spectrum[(freqs < low) | (freqs > low * rng.uniform(1.5, 6))] = 0
            event = np.fft.irfft(spectrum, m)
            event /= max(1e-9, float(np.sqrt(np.mean(event**2))))
        wave[start : start + m] += (rng.uniform(0.05, 0.3) * envelope * event).astype(np.float32)
    clicks = rng.integers(0, n, size=rng.integers(0, 20))
    wave[clicks] += rng.uniform(-0.5, 0.5, size=clicks.shape).astype(np.float32)
    suffix = ".wav" if kind == 0 else ".flac"
    sf.write(str(Path(folder) / f"synth_{index:05d}{suffix}"), np.clip(wave, -1, 1), rate, subtype="PCM_16")
    return seconds


def synthesise(folder: Path, clips: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = {p.stem for p in folder.iterdir()}
    todo = [(i, seed, str(folder)) for i in range(clips) if f"synth_{i:05d}" not in done]
    if not todo:
        return
    log(f"synthesising {len(todo)} clips of 1-30 s into {folder} ...")
    start = time.perf_counter()
    with ProcessPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as pool:
        for n, _ in enumerate(pool.map(_synth_clip, todo, chunksize=16), 1):
            if n % 1000 == 0:
                log(f"  {n} / {len(todo)} ({time.perf_counter() - start:.0f} s)")


# ----------------------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    m, res = report["machine"], report["results"]
    lines = [f"CPU: {cpu_label(m)}, {m['usable_cores']} cores, torch {m['torch']}.", ""]
    load = m["load_average_before"][0]
    lines += [f"| folder (load average {load:.1f} before) | clips | audio (h) | wall (s) | clips/s | real time | "
              "real time from CPU time | peak RSS, all processes (MB) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in ("corpus", "synthetic"):
        row = res.get(key)
        if row:
            from_cpu = row.get("real_time_factor_from_cpu_time")
            lines.append(f"| {key} | {row['clips']:,} | {row['audio_s'] / 3600:.2f} | {row['wall_s']:.1f} | "
                         f"{row['clips_per_s']:.1f} | {row['real_time_factor']:.0f}x | "
                         f"{'' if from_cpu is None else f'{from_cpu:.0f}x'} | {row['peak_rss_mb_all_processes']:.0f} |")
    if res.get("ray"):
        lines += ["", "| corpus, end to end | wall (s) | clips/s | real time |", "|---|---:|---:|---:|"]
        for row in res["ray"]:
            how = ("1 process (--workers 0)" if not row["extra_args"] else
                   f"Ray, local cluster, {row['workers']} worker(s)")
            lines.append(f"| {how} | {row['wall_s']:.1f} | {row['clips_per_s']:.1f} | {row['real_time_factor']:.0f}x |")
    if res.get("levers"):
        lines += ["", "| pipeline, corpus subset | wall (s) | CPU (s) | clips/s | real time | cosine gap to today |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in res["levers"]:
            gap = row.get("max_cosine_gap_to_today")
            cpu = "" if row["cpu_s"] is None else f"{row['cpu_s']:.1f}"
            lines.append(f"| {row['variant']} | {row['wall_s']:.1f} | {cpu} | {row['clips_per_s']:.1f} | "
                         f"{row['real_time_factor']:.0f}x | {'' if gap is None else f'{gap:.1e}'} |")
    if res.get("cnn"):
        lines += ["", "| aisfx CNN, one thread | mode | blocks/pass | CPU ms/block |", "|---|---|---:|---:|"]
        for row in res["cnn"]:
            lines.append(f"| {row['variant']} | {row['mode']} | {row['blocks_per_pass']} | {row['cpu_ms_per_block']:.1f} |")
    if res.get("overlap"):
        o = res["overlap"]
        lines += ["", f"Overlap: one CNN pass over each whole clip, blocks pooled from the shared map: {o['speed_up']:.2f}x "
                      f"the exact path's speed on {o['clips']} multi-block clips, cosine gap median "
                      f"{o['median_cosine_gap']:.1e}, max {o['max_cosine_gap']:.1e} (the floor is 1e-5): not exact."]
    for name, f in report["floors"].items():
        lines.append(f"- {'PASS' if f['pass'] else 'FAIL'} {name}: {f['value']:.0f}x (floor >= {f['floor']:.0f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small folders, writes nothing unless --out")
    p.add_argument("--out", type=Path, default=None, help=f"results file (default {DEFAULT_OUT})")
    p.add_argument("--synthetic-clips", type=int, default=10_000)
    p.add_argument("--synthetic-dir", type=Path, default=None,
                   help="where the synthetic folder is written (kept; reused when it holds the clips); "
                        "default: a temporary folder, deleted afterwards")
    p.add_argument("--subset", type=int, default=240, help="corpus clips for the lever study")
    p.add_argument("--sections", nargs="+", default=["cnn", "levers", "overlap", "corpus", "ray", "synthetic"],
                   help="ray needs pip install \"diffatr[ray]\"")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.quick:
        args.synthetic_clips, args.subset, args.repeats = 30, 24, 1
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        log(f"warning: load average {load_before[0]:.2f} before the run: other processes share the CPU")
    encoder = build_audio_encoder(AudioEncoderConfig())
    corpus = audio_files(CORPUS)
    if not corpus:
        log(f"no built-in corpus at {CORPUS}")
        return 1
    results: dict[str, Any] = {}
    started = time.perf_counter()
    if "cnn" in args.sections:
        results["cnn"] = cnn_section(encoder, [1, 8] if args.quick else [1, 8, 32], args.repeats)
    step = max(1, len(corpus) // args.subset)
    subset = corpus[::step][: args.subset]
    if "levers" in args.sections:
        results["levers"] = levers_section(encoder, subset, audio_seconds(subset, encoder.config.max_seconds))
    if "overlap" in args.sections:
        long_clips = [p for p in subset if sf.info(str(p)).duration > 4.0][: 8 if args.quick else 40]
        results["overlap"] = overlap_section(encoder, long_clips)
    if "corpus" in args.sections:
        folder = CORPUS
        paths = corpus
        if args.quick:  # a small folder of links
            folder = Path(tempfile.mkdtemp(prefix="diffatr-corpus-subset-"))
            paths = subset
            for path in paths:
                (folder / path.name).symlink_to(path)
        results["corpus"] = run_index(folder, audio_seconds(paths, encoder.config.max_seconds), len(paths), None)
        if args.quick:
            shutil.rmtree(folder, ignore_errors=True)
    if "ray" in args.sections:  # 2 local Ray workers against 1 process, on the corpus
        paths = corpus if not args.quick else subset
        folder = CORPUS
        if args.quick:
            folder = Path(tempfile.mkdtemp(prefix="diffatr-corpus-subset-"))
            for path in paths:
                (folder / path.name).symlink_to(path)
        seconds = audio_seconds(paths, encoder.config.max_seconds)
        results["ray"] = [run_index(folder, seconds, len(paths), 0),
                          *[run_index(folder, seconds, len(paths), n, ("--ray", "local")) for n in (1, 2)]]
        if args.quick:
            shutil.rmtree(folder, ignore_errors=True)
    if "synthetic" in args.sections:
        folder = args.synthetic_dir or Path(tempfile.mkdtemp(prefix="diffatr-synthetic-"))
        try:
            synthesise(folder, args.synthetic_clips)
            paths = [p for p in audio_files(folder) if int(p.stem.split("_")[1]) < args.synthetic_clips]
            if len(paths) != len(audio_files(folder)):  # a larger folder kept from before: index the first N
                subset_dir = Path(tempfile.mkdtemp(prefix="diffatr-synthetic-first-"))
                for path in paths:
                    (subset_dir / path.name).symlink_to(path)
                index_folder = subset_dir
            else:
                index_folder = folder
            results["synthetic"] = run_index(index_folder, audio_seconds(paths, encoder.config.max_seconds),
                                             len(paths), None)
        finally:
            if args.synthetic_dir is None:
                shutil.rmtree(folder, ignore_errors=True)
    floors = {}
    for key in ("corpus", "synthetic"):
        if key in results:
            value = results[key]["real_time_factor"]
            floors[f"{key}_real_time_factor"] = {"floor": FLOOR_REAL_TIME, "value": value,
                                                 "pass": value >= FLOOR_REAL_TIME}
    report = {
        "benchmark": "indexing",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**describe_cpu(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": list(load_before), "load_average_after": list(os.getloadavg())},
        "settings": {"quick": args.quick, "synthetic_clips": args.synthetic_clips, "subset": len(subset),
                     "batch_blocks": batched.DEFAULT_BATCH_BLOCKS, "sections": args.sections},
        "results": results,
        "floors": floors,
        "wall_s": time.perf_counter() - started,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    if out is not None:
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
