"""benchmarks/load.py's memory verdict (the benchmark itself starts the app and runs minutes)."""

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def load():
    yield from load_benchmark("load")


def test_flatness_ignores_the_warm_up_and_measures_the_slope(load) -> None:
    # 300 MB of warm-up growth, then flat with +-1 MB jitter
    trace = [(n, 600.0 + min(n, 400) * 0.75 + (1 if n % 200 else -1)) for n in range(100, 2100, 100)]
    flat = load.flatness(trace, warmup=400)
    assert flat["from_requests"] == 400 and flat["to_requests"] == 2000 and flat["samples"] == 17
    assert abs(flat["slope_mb_per_1000_requests"]) < 1.0 and flat["max_mb"] - flat["min_mb"] <= 2
    window = flat["last_1500_requests"]
    assert window["from_requests"] == 500 and window["to_requests"] == 2000 and window["samples"] == 16
    assert abs(window["slope_mb_per_1000_requests"]) < 1.0
    # a leak of 20 MB per 1,000 requests is seen as one
    leaking = [(n, 900.0 + 0.02 * n) for n in range(100, 2100, 100)]
    leak = load.flatness(leaking, warmup=400)
    assert leak["slope_mb_per_1000_requests"] == pytest.approx(20.0)
    assert leak["change_mb"] == pytest.approx(32.0)
    assert leak["last_1500_requests"]["slope_mb_per_1000_requests"] == pytest.approx(20.0)
    # growth that stops: the whole post-warm-up slope sees it, the last window is flat
    plateau = [(n, 700.0 + min(n, 1000) * 0.05) for n in range(100, 3100, 100)]
    steps = load.flatness(plateau, warmup=400)
    assert steps["slope_mb_per_1000_requests"] > 5
    assert steps["last_1500_requests"]["change_mb"] == 0 and steps["last_1500_requests"]["slope_mb_per_1000_requests"] == 0


def test_flatness_needs_samples(load) -> None:
    assert load.flatness([(100, 1.0), (200, 1.0)], warmup=0) == {"samples": 2}
