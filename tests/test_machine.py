"""The CPU description (``diffatr.machine``): sysfs caches, /proc/cpuinfo, and a machine that
reports neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffatr import machine


def _fake_sysfs(root: Path, entries: list[tuple[str, str, str, str]]) -> Path:
    for i, (level, kind, size, shared) in enumerate(entries):
        folder = root / f"index{i}"
        folder.mkdir(parents=True)
        (folder / "level").write_text(level + "\n")
        (folder / "type").write_text(kind + "\n")
        (folder / "size").write_text(size + "\n")
        (folder / "shared_cpu_list").write_text(shared + "\n")
    return root


@pytest.mark.parametrize("text,expected", [("512K", 512 << 10), ("2048K", 2 << 20), ("32M", 32 << 20),
                                           ("1G", 1 << 30), ("64", 64), ("2 MiB", 2 << 20), ("", None),
                                           ("lots", None)])
def test_cache_sizes_parse_as_sysfs_writes_them(text, expected):
    assert machine.parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [("0", 1), ("0-1", 2), ("0,8", 2), ("0-3,8-11", 8), ("", 1)])
def test_cpu_lists_count_their_cpus(text, expected):
    assert machine.count_cpus(text) == expected


def test_the_l2_per_core_comes_from_sysfs_and_is_split_between_the_cpus_sharing_it(tmp_path):
    amd = _fake_sysfs(tmp_path / "amd", [("1", "Data", "32K", "0"), ("1", "Instruction", "32K", "0"),
                                         ("2", "Unified", "512K", "0"), ("3", "Unified", "32768K", "0-1")])
    caches = machine.cpu_caches(amd)
    assert [(c.level, c.kind) for c in caches] == [(1, "Data"), (1, "Instruction"), (2, "Unified"), (3, "Unified")]
    assert machine.l2_bytes_per_core(caches) == 512 << 10
    assert caches[3].bytes_per_cpu == 16 << 20
    smt = _fake_sysfs(tmp_path / "smt", [("1", "Data", "48K", "0,56"), ("2", "Unified", "2048K", "0,56")])
    assert machine.l2_bytes_per_core(machine.cpu_caches(smt)) == 1 << 20  # two hyper-threads share it


def test_a_machine_without_sysfs_or_cpuinfo_is_described_without_failing(tmp_path, monkeypatch):
    assert machine.cpu_caches(tmp_path / "absent") == []
    assert machine.l2_bytes_per_core([]) is None
    broken = _fake_sysfs(tmp_path / "broken", [("two", "Unified", "512K", "0"), ("2", "Unified", "", "0")])
    assert machine.cpu_caches(broken) == []
    monkeypatch.setattr(machine, "SYSFS_CACHE", tmp_path / "absent")
    monkeypatch.setattr(machine, "PROC_CPUINFO", tmp_path / "absent")
    machine.describe_cpu.cache_clear()
    try:
        info = machine.describe_cpu()
    finally:
        machine.describe_cpu.cache_clear()
    assert info["caches"] == [] and info["l2_bytes_per_core"] is None and info["simd_flags"] == []
    assert "L2 unknown" in machine.cpu_label(info)


def test_cpuinfo_gives_model_vendor_and_the_simd_flags(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                       "model name\t: Intel(R) Xeon(R) Platinum 8480C\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f "
                       "avx512_bf16 amx_tile\n\nprocessor\t: 1\nvendor_id\t: SomethingElse\n")
    sysfs = _fake_sysfs(tmp_path / "sys", [("2", "Unified", "2048K", "0")])
    monkeypatch.setattr(machine, "SYSFS_CACHE", sysfs)
    monkeypatch.setattr(machine, "PROC_CPUINFO", cpuinfo)
    machine.describe_cpu.cache_clear()
    try:
        info = machine.describe_cpu()
    finally:
        machine.describe_cpu.cache_clear()
    assert info["cpu_vendor"] == "GenuineIntel" and info["cpu_family_model"] == "6/143"
    assert info["simd_flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
    assert machine.cpu_label(info) == "Intel(R) Xeon(R) Platinum 8480C (GenuineIntel, L2 2048 KiB/core, AVX-512)"
