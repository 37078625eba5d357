"""Load benchmark of ``python app.py`` (issue 11): concurrent API clients and animating browsers.

Starts the app on a free localhost port (the shipped demo corpus), then runs, one after the
other:
  * 8 and 32 concurrent ``gradio_client`` clients, each sending text searches (``/search_text``;
    50 each, 100 each for 32 clients: the memory verdict is over their last 1,500), and 32
    again with gradio_client's defaults (see ``run_clients``: they load the CA bundle for
    every request, CPU taken from the app's two cores);
  * 8 "browser" clients that search and then stream the 51-frame animation (the browser's own
    queue events, joined by ``fn_index`` with the client's session), while 8 API clients search.
Reports p50 / p95 / max latency, errors, and the app's resident memory before / peak / after,
its trace every 100 answered requests and its slope after the first run, with the machine's
load average (the numbers mean little on a busy machine). Not a test.

    python benchmarks/load.py                       # ~8 min on 2 cores; writes benchmarks/results/load.json
    python benchmarks/load.py --requests 5 --out /tmp/load.json    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.machine import cpu_label  # noqa: E402

QUERIES = ["a dog barking", "birds chirping", "thunder", "applause", "car engine", "rain on a roof",
           "a horse neighing", "footsteps on gravel"]
FAST = dict(k=5, steps=50, top_k=32, alpha=1.0, seed=0, temperature=1.0)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Memory(threading.Thread):
    """Samples the app's resident memory every 0.2 s; ``trace`` holds (requests answered so far,
    MB) each time another ``every`` requests have been answered."""

    def __init__(self, pid: int, every: int = 100) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop, self.every = pid, 0.0, threading.Event(), every
        self.answered = 0  # requests answered, all runs together (the clients count them)
        self.trace: list[tuple[int, float]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            rss = _rss_mb(self.pid)
            self.peak = max(self.peak, rss)
            if self.answered >= (len(self.trace) + 1) * self.every:
                self.trace.append((self.answered, round(rss, 1)))
            time.sleep(0.2)


def flatness(trace: list[tuple[int, float]], warmup: int, window: int = 1500) -> dict:
    """How resident memory moved after the first ``warmup`` requests: the change from the first
    sample past the warm-up to the last, the least-squares slope in MB per 1,000 requests, and
    the same over the last ``window`` requests (the target: flat over 1,500)."""

    def stats(points: list[tuple[int, float]]) -> dict:
        xs, ys = [n for n, _ in points], [mb for _, mb in points]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
        return {"from_requests": xs[0], "to_requests": xs[-1], "samples": len(points),
                "change_mb": round(ys[-1] - ys[0], 1), "min_mb": min(ys), "max_mb": max(ys),
                "slope_mb_per_1000_requests": round(1000 * slope, 2)}

    steady = [(n, mb) for n, mb in trace if n >= warmup]
    if len(steady) < 3:
        return {"samples": len(steady)}
    last = [(n, mb) for n, mb in steady if n >= steady[-1][0] - window]
    return {"warmup_requests": warmup, **stats(steady), f"last_{window}_requests": stats(last)}


def start_app(log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", PYTHONUNBUFFERED="1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:]) from None
            time.sleep(0.25)
    raise RuntimeError("the app did not start")


def _fn_index(url: str, name: str) -> int:
    """The index of the first event running the function ``name`` (the browser's own events)."""
    with urllib.request.urlopen(url + "config", timeout=10) as response:
        config = json.load(response)
    for i, dep in enumerate(config["dependencies"]):
        if dep.get("api_name") == name or dep.get("id") == name:
            return dep.get("id", i)
    raise KeyError(name)


def animate(url: str, session_hash: str, fn_index: int) -> int:
    """Stream the animation of the session's last search as a browser does; returns frames."""
    body = json.dumps({"data": [None], "fn_index": fn_index, "session_hash": session_hash, "event_data": None,
                       "trigger_id": None}).encode()
    request = urllib.request.Request(url + "gradio_api/queue/join", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    frames = 0
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session_hash}", timeout=120) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("event_id") not in (None, event_id):
                continue
            if message.get("msg") == "process_generating":
                frames += 1
            if message.get("msg") == "process_completed":
                if not message.get("success", True):
                    raise RuntimeError(str(message.get("output"))[:200])
                return frames
    return frames


def summary(latencies: list[float], errors: int, seconds: float) -> dict:
    ordered = sorted(latencies) or [float("nan")]
    return {"requests": len(latencies) + errors, "errors": errors, "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_s": round(ordered[-1], 3), "wall_s": round(seconds, 1)}


def run_clients(url: str, clients: int, requests: int, animators: int = 0, animation_fn: int | None = None,
                memory: Memory | None = None, ca_bundle_per_request: bool = False) -> dict:
    """``clients`` API clients sending ``requests`` text searches each (and ``animators`` browsers).

    ``ca_bundle_per_request``: gradio_client's default ``ssl_verify=True`` builds a new TLS
    context, loading the CA bundle, for every request, even to an ``http://`` URL: ~57 ms of
    the clients' CPU per search, on the server's two cores here (on a real deployment the
    clients' own machines pay it). By default the clients pass ``ssl_verify=False``, which on
    ``http://`` skips only that; True measures gradio_client's defaults.
    """
    from gradio_client import Client

    api_times: list[float] = []
    anim_times: list[float] = []
    errors = {"api": 0, "animation": 0}
    lock = threading.Lock()

    def api_client(n: int) -> None:
        client = Client(url, verbose=False, download_files=False, ssl_verify=ca_bundle_per_request)
        for i in range(requests):
            started = time.monotonic()
            try:
                client.predict(QUERIES[(n + i) % len(QUERIES)], **FAST, api_name="/search_text")
                with lock:
                    api_times.append(time.monotonic() - started)
            except Exception:  # noqa: BLE001 - counted
                with lock:
                    errors["api"] += 1
            if memory is not None:
                with lock:
                    memory.answered += 1

    def browser(n: int) -> None:
        client = Client(url, verbose=False, download_files=False, ssl_verify=ca_bundle_per_request)
        for i in range(max(1, requests // 10)):
            started = time.monotonic()
            try:
                client.predict(QUERIES[(n + i) % len(QUERIES)], **FAST, api_name="/search_text")
                frames = animate(url, client.session_hash, animation_fn)
                assert frames > 1, frames
                with lock:
                    anim_times.append(time.monotonic() - started)
            except Exception:  # noqa: BLE001 - counted
                with lock:
                    errors["animation"] += 1

    threads = [threading.Thread(target=api_client, args=(n,)) for n in range(clients)]
    threads += [threading.Thread(target=browser, args=(n,)) for n in range(animators)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    result = {"api_text_search": summary(api_times, errors["api"], seconds)}
    if animators:
        result["animation (search + 51 frames)"] = summary(anim_times, errors["animation"], seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="searches per API client")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    args = parser.parse_args(argv)
    log = Path(args.out).with_suffix(".app.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(log)
    memory = Memory(proc.pid)
    memory.start()
    # (name, API clients, searches each, animating browsers, gradio_client defaults)
    runs = [("8 API clients", 8, args.requests, 0, False),
            ("32 API clients", 32, 2 * args.requests, 0, False),
            ("32 API clients, gradio_client defaults (CA bundle loaded per request)", 32, args.requests, 0, True),
            ("8 API clients + 8 animating browsers", 8, args.requests, 8, False)]
    try:
        results = {"machine": {"cpu": cpu_label(), "cpus": os.cpu_count(), "load_average_before": os.getloadavg()},
                   "memory_mb": {"before": round(_rss_mb(proc.pid), 1)}, "runs": {}}
        animation_fn = _fn_index(url, "play_from_start")
        for name, clients, requests, animators, ca_bundle in runs:
            start = memory.answered
            cpu = (_cpu_seconds(proc.pid), _cpu_seconds(os.getpid()))
            results["runs"][name] = run_clients(url, clients, requests, animators, animation_fn, memory,
                                                ca_bundle_per_request=ca_bundle)
            # Where the two cores went: the clients share them with the app (a real deployment's
            # clients run elsewhere), so a run's latency is partly the clients' own cost.
            wall = results["runs"][name]["api_text_search"]["wall_s"]
            results["runs"][name]["cores_used"] = {
                "app": round((_cpu_seconds(proc.pid) - cpu[0]) / wall, 2),
                "clients": round((_cpu_seconds(os.getpid()) - cpu[1]) / wall, 2)}
            if name == "32 API clients":  # the target: memory flat over 1,500 requests of 32 clients
                time.sleep(0.5)  # the last sample
                inside = [(n, mb) for n, mb in memory.trace if start < n <= memory.answered]
                results["runs"][name]["memory"] = flatness(inside, warmup=memory.answered - 1500)
            print(name, json.dumps(results["runs"][name]), flush=True)
        time.sleep(2)
        results["memory_mb"].update(peak=round(memory.peak, 1), after=round(_rss_mb(proc.pid), 1))
        # All runs together, past the first (8 clients) run's warm-up.
        results["memory_mb"]["after_warmup"] = flatness(memory.trace, warmup=8 * args.requests)
        results["memory_mb"]["trace"] = memory.trace
        results["machine"]["load_average_after"] = os.getloadavg()
        results["requests_per_api_client"] = args.requests
    finally:
        memory.stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results["memory_mb"].items() if k != "trace"}), "->", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
