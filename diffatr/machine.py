"""What the CPU is: model, vendor, cache sizes and SIMD flags, as Linux reports them.

Read by the fused DDIM loop (``diffatr.diffusion.factorised``), whose block of queries should
fit the core's cache, and recorded by the benchmarks beside their timings, since a number
measured on one CPU says little about another. Nothing here changes a result; every reader
copes with a machine that reports nothing (not Linux, a container without sysfs).
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
PROC_CPUINFO = Path("/proc/cpuinfo")
# The SIMD extensions that decide how fast torch's float32 kernels run (oneDNN and MKL pick
# their code paths from these); the full flag list is hundreds of words long.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)B?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class CacheLevel:
    """One cache of CPU 0, as sysfs describes it.

    Attributes:
        level: 1, 2, 3 ...
        kind: "Data", "Instruction" or "Unified".
        size_bytes: its whole size.
        shared_by: how many logical CPUs share it (2 for an L2 shared by two hyper-threads).
    """

    level: int
    kind: str
    size_bytes: int
    shared_by: int

    @property
    def bytes_per_cpu(self) -> int:
        return self.size_bytes // max(1, self.shared_by)


def parse_size(text: str) -> int | None:
    """``"512K"`` -> 524288 (sysfs writes K, M or G; also accepts ``"2 MiB"``-less forms)."""
    match = _SIZE.match(text.replace("i", "") if text else "")
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]


def count_cpus(cpu_list: str) -> int:
    """``"0-3,8"`` -> 5 (the sysfs list syntax)."""
    count = 0
    for part in cpu_list.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            count += int(hi or lo) - int(lo) + 1
        except ValueError:
            return 1
    return max(1, count)


def cpu_caches(root: Path | None = None) -> list[CacheLevel]:
    """The caches of CPU 0 (``root/index*/{level,type,size,shared_cpu_list}``, default
    ``SYSFS_CACHE``); [] when unreadable."""
    caches = []
    try:
        entries = sorted(Path(root or SYSFS_CACHE).glob("index*"))
    except OSError:
        return []
    for entry in entries:
        try:
            level = int((entry / "level").read_text())
            kind = (entry / "type").read_text().strip()
            size = parse_size((entry / "size").read_text())
            shared = (entry / "shared_cpu_list").read_text() if (entry / "shared_cpu_list").exists() else "0"
        except (OSError, ValueError):
            continue
        if size:
            caches.append(CacheLevel(level, kind, size, count_cpus(shared)))
    return caches


def l2_bytes_per_core(caches: list[CacheLevel] | None = None) -> int | None:
    """The data (or unified) L2 one core has to itself, or None when sysfs does not say."""
    caches = cpu_caches() if caches is None else caches
    l2 = [c for c in caches if c.level == 2 and c.kind in ("Data", "Unified")]
    return l2[0].bytes_per_cpu if l2 else None


def _cpuinfo_fields(path: Path | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} when unreadable)."""
    fields: dict[str, str] = {}
    try:
        text = Path(path or PROC_CPUINFO).read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


@functools.lru_cache(maxsize=1)
def describe_cpu() -> dict[str, Any]:
    """Model, vendor, caches and SIMD flags of this CPU, for a benchmark's results file."""
    fields = _cpuinfo_fields()
    flags = set(fields.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    caches = cpu_caches()
    return {
        "cpu_model": fields.get("model name") or platform.processor() or "unknown",
        "cpu_vendor": fields.get("vendor_id", "unknown"),
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "caches": [dict(asdict(c), bytes_per_cpu=c.bytes_per_cpu) for c in caches],
        "l2_bytes_per_core": l2_bytes_per_core(caches),
        "simd_flags": [f for f in SIMD_FLAGS if f in flags],
    }


def cpu_label(info: dict[str, Any] | None = None) -> str:
    """A short name for a results table: ``"AMD EPYC (AuthenticAMD, L2 512 KiB/core, AVX2)"``."""
    info = describe_cpu() if info is None else info
    l2 = info.get("l2_bytes_per_core")
    simd = info.get("simd_flags") or []
    widest = next((f.upper() for f in ("avx512f", "avx2", "avx") if f in simd), "no AVX")
    widest = "AVX-512" if widest == "AVX512F" else widest
    l2_text = f"L2 {l2 // 1024} KiB/core" if l2 else "L2 unknown"
    return f"{info.get('cpu_model', 'unknown')} ({info.get('cpu_vendor', '?')}, {l2_text}, {widest})"
