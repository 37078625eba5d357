"""benchmarks/scale.py's synthetic collections and its table (the benchmark itself runs for
many minutes)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark("scale")


def test_synthetic_vectors_stay_near_their_source(bench):
    base = F.normalize(torch.randn(50, 96, generator=torch.Generator().manual_seed(0)), dim=-1)
    out = bench.synthetic(base, 3000, seed=1, cosine=0.8)
    assert out.shape == (3000, 96) and torch.allclose(out.norm(dim=1), torch.ones(3000), atol=1e-5)
    best = (out @ base.T).max(dim=1).values  # each vector's cosine to its own source
    assert 0.74 < float(best.mean()) < 0.86
    assert torch.equal(out, bench.synthetic(base, 3000, seed=1, cosine=0.8))  # seeded


def test_table_lists_sweeps_and_skipped_stores(bench):
    row = {"build_s": 1.0, "disk_mb": 2.0, "memory_mb": 3.0, "recall@32": 0.9, "p50_ms": 1.0, "p95_ms": 2.0,
           "batch32_p50_ms_per_query": 0.5, "with_rerank_p50_ms": 9.0, "rerank_p50_ms": 8.0, "with_rerank_batch32_ms_per_query": 0.7,
           "sweep": [{"faiss_ef_search": 512, "recall@32": 0.96, "p50_ms": 1.5, "p95_ms": 2.5}]}
    text = bench.table({"sizes": {"1000": {"faiss HNSW32": row, "milvus lite (FLAT)": {"skipped": "too big"}}}})
    lines = text.splitlines()
    assert lines[2].startswith("| 1,000 | faiss HNSW32 | 1.0 |") and "| 0.900 |" in lines[2]
    assert lines[2].endswith("| 9.0 | +8.00 ms (+800%) |  | 0.7 |")  # re-rank 8.0 on a 1.0 ms first stage; no 50-step run
    assert all(line.count("|") == lines[0].count("|") for line in lines[2:])  # every row fills the columns
    assert "↳ ef_search = 512" in lines[3] and "0.960" in lines[3]
    assert "too big" in lines[4]
    # against the first stage timed in the same run when there is one
    timed = bench.table({"sizes": {"1000": {"faiss HNSW32": {**row, "rerank_search_p50_ms": 2.0,
                                                             "rerank_p50_ms_paper_steps": 20.0,
                                                             "rerank_search_p50_ms_paper_steps": 4.0}}}})
    assert "| +8.00 ms (+400%) | +20.00 ms (+500%) | 0.7 |" in timed.splitlines()[2]


def test_the_chunked_huge_run_finds_exact_neighbours_when_the_index_is_exact(bench, tmp_path):
    # IVF8 probing all 8 lists is exact: recall 1 checks the chunked ground truth and ids
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    emb = {"audio": F.normalize(torch.randn(40, 32, generator=g), dim=-1),
           "test_text": F.normalize(torch.randn(20, 32, generator=g), dim=-1)}
    config = bench.StoreConfig("faiss", faiss_factory="IVF8,Flat", faiss_nprobe=8, faiss_train_size=1000)
    out = bench.run_huge(2500, emb, tmp_path, repeats=5, config=config, chunk_size=1000,
                         sweep=[{"faiss_nprobe": 1}])
    assert out["n"] == 2500 and out["recall@32"] == 1.0 and out["p50_ms"] > 0 and out["disk_mb"] > 0
    assert out["sweep"][0]["faiss_nprobe"] == 1 and out["sweep"][0]["recall@32"] < 1.0
    assert not (tmp_path / "huge.index").exists()
    lines = bench.huge_table({"huge": [out]}).splitlines()
    assert lines[2].startswith("| 2,500 | IVF8,Flat | 8 | 4 | 1.000 |") and lines[3].startswith("| 2,500 | IVF8,Flat | 1 | 4 |")


def test_the_rerank_timer_times_each_part_of_the_same_queries(bench):
    from diffatr.checkpoint import load_checkpoint

    model = load_checkpoint(Path(__file__).resolve().parents[1] / "checkpoints" / "default")
    dim = model.denoisers["text_to_audio"].config.embed_dim
    g = torch.Generator().manual_seed(0)
    store = bench.build_store(bench.StoreConfig("exact"), F.normalize(torch.randn(300, dim, generator=g), dim=-1),
                              np.arange(300))
    times = bench.rerank_ms(store, F.normalize(torch.randn(8, dim, generator=g), dim=-1), model, repeats=3, steps=2)
    assert set(times) == {"search", "vectors", "rerank", "total"} and all(len(v) == 3 for v in times.values())
    for i in range(3):
        assert times["vectors"][i] <= times["rerank"][i] <= times["total"][i]
        assert times["search"][i] + times["rerank"][i] == pytest.approx(times["total"][i])
