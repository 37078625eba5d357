import torch

from diffatr.encoders.cache import FeatureCache


def test_cache_computes_once_per_content_and_config(tmp_path):
    calls = []

    def compute(path):
        calls.append(path)
        return torch.full((4,), float(len(path.read_bytes())))

    a = tmp_path / "a.bin"
    a.write_bytes(b"12345")
    cache = FeatureCache(tmp_path / "cache", {"name": "x"})
    first = cache.get_or_compute(a, compute)
    again = cache.get_or_compute(a, compute)
    assert torch.equal(first, again) and len(calls) == 1 and cache.hits == 1

    # a renamed copy hits; changed content or another config misses
    b = tmp_path / "b.bin"
    b.write_bytes(b"12345")
    cache.get_or_compute(b, compute)
    assert len(calls) == 1
    a.write_bytes(b"123456")
    assert cache.get_or_compute(a, compute)[0] == 6 and len(calls) == 2
    FeatureCache(tmp_path / "cache", {"name": "y"}).get_or_compute(b, compute)
    assert len(calls) == 3


def test_damaged_entry_is_recomputed(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"abc")
    cache = FeatureCache(tmp_path / "cache", {})
    cache.get_or_compute(a, lambda p: torch.ones(3))
    for entry in (tmp_path / "cache").rglob("*.safetensors"):
        entry.write_bytes(b"garbage")
    assert torch.equal(cache.get_or_compute(a, lambda p: torch.zeros(3)), torch.zeros(3))
