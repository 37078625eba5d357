"""Start-up: a cold ``diffatr search`` and ``python app.py`` until its page is served.

    python benchmarks/startup.py            # writes benchmarks/results/startup.json

- search: ``diffatr search "a dog barks"`` in a new process each time (the shipped checkpoint
  and demo index), wall time from the start of the process to its exit; one untimed run first
  so the files are in the page cache ("a warm machine"), then the median of ``--runs``.
  ``python -c "import torch"`` is timed beside it: the floor no lazy import can remove.
- app: ``python app.py`` on a free localhost port, from the start of the process until ``/``
  answers 200 (the page a browser loads), median of ``--app-runs`` after one untimed run.
- imports: which heavy libraries each command imports (``sys.modules`` at exit).

Floors (issue 22): search at most 3 s, the app's page at most 4 s. These are wall times on a
machine that may be shared: say so beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.machine import cpu_label, describe_cpu  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "startup.json"
FLOOR_SEARCH_S = 3.0
FLOOR_APP_S = 4.0
QUERY = "a dog barks"
HEAVY = ["torch", "transformers", "gradio", "faiss", "pymilvus", "ray", "scipy", "sklearn", "pandas", "matplotlib"]
# The console script ``diffatr`` is this line; running it through the interpreter needs no PATH.
CLI = "import sys; from diffatr.cli import main; sys.exit(main())"
REPORT_MODULES = ("import atexit, sys; atexit.register(lambda: print('MODULES', ' '.join(sorted("
                  "{m.split('.')[0] for m in sys.modules})), file=sys.stderr)); ")


def timed_run(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def imported(code: str, args: list[str]) -> list[str]:
    """The heavy libraries a command imports."""
    done = subprocess.run([sys.executable, "-c", REPORT_MODULES + code, *args], cwd=ROOT, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("MODULES ")), "MODULES")
    return [m for m in HEAVY if m in line.split()[1:]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_page_seconds(timeout_s: float) -> float:
    """``python app.py`` until ``/`` answers 200, in seconds."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.perf_counter() - start < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{proc.stderr.read()[-2000:]!r}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"app.py did not serve its page within {timeout_s} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": times}


def run(args: argparse.Namespace) -> dict[str, Any]:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    search = [sys.executable, "-c", CLI, "search", QUERY]
    torch_only = [sys.executable, "-c", "import torch"]
    timed_run(search)  # untimed: the checkpoint, index and libraries into the page cache
    results: dict[str, Any] = {}
    search_times, torch_times = [], []
    for _ in range(args.runs):  # interleaved, so a noisy neighbour slows both alike
        search_times.append(timed_run(search))
        torch_times.append(timed_run(torch_only))
        log(f"search {search_times[-1]:.2f} s, import torch {torch_times[-1]:.2f} s")
    results["search"] = {"command": f'diffatr search "{QUERY}"', **summary(search_times),
                         "imports": imported(CLI, ["search", QUERY])}
    results["import_torch"] = summary(torch_times)
    if args.app_runs:
        app_page_seconds(args.app_timeout)  # untimed: a warm machine
        app_times = []
        for _ in range(args.app_runs):
            app_times.append(app_page_seconds(args.app_timeout))
            log(f"app page {app_times[-1]:.2f} s")
        results["app"] = {"command": "python app.py", **summary(app_times)}
    return results


def floors(results: dict[str, Any]) -> dict[str, Any]:
    out = {"search_s": {"floor": FLOOR_SEARCH_S, "value": results["search"]["median_s"],
                        "pass": results["search"]["median_s"] <= FLOOR_SEARCH_S}}
    if "app" in results:
        out["app_page_s"] = {"floor": FLOOR_APP_S, "value": results["app"]["median_s"],
                             "pass": results["app"]["median_s"] <= FLOOR_APP_S}
    return out


def markdown(report: dict[str, Any]) -> str:
    res, m = report["results"], report["machine"]
    load = m.get("load_average_before", [float("nan")])[0]
    lines = [f"CPU: {cpu_label(m)}, {m['usable_cores']} cores, load average {load:.1f} before the run; medians of "
             f"{report['settings']['runs']} runs (each a new process, files in the page cache).", "",
             "| what | median (s) | min - max (s) | floor (s) |", "|---|---:|---:|---:|"]
    s = res["search"]
    lines.append(f"| `{s['command']}` | {s['median_s']:.2f} | {s['min_s']:.2f} - {s['max_s']:.2f} | "
                 f"{FLOOR_SEARCH_S:g} |")
    t = res["import_torch"]
    lines.append(f"| `python -c \"import torch\"` (the floor of any command) | {t['median_s']:.2f} | "
                 f"{t['min_s']:.2f} - {t['max_s']:.2f} | |")
    if "app" in res:
        a = res["app"]
        lines.append(f"| `python app.py` until its page is served | {a['median_s']:.2f} | "
                     f"{a['min_s']:.2f} - {a['max_s']:.2f} | {FLOOR_APP_S:g} |")
    lines += ["", f"`diffatr search` imports: {', '.join(s['imports']) or 'none of the heavy libraries'}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of diffatr search")
    parser.add_argument("--app-runs", type=int, default=5, help="timed starts of app.py (0: skip the app)")
    parser.add_argument("--app-timeout", type=float, default=120.0, help="seconds to wait for the page")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    import torch

    machine = {**describe_cpu(), "torch": torch.__version__, "python": platform.python_version(),
               "platform": platform.platform(), "load_average_before": list(os.getloadavg())}
    results = run(args)
    machine["load_average_after"] = list(os.getloadavg())  # other work on the machine slows every row
    report = {"benchmark": "startup", "command": "python " + " ".join(["benchmarks/startup.py", *(argv or sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.gmtime()),
              "settings": {"runs": args.runs, "app_runs": args.app_runs, "query": QUERY}, "machine": machine,
              "results": results, "floors": floors(results)}
    report["markdown"] = markdown(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(report["markdown"])
    for name, f in report["floors"].items():
        print(f"{'PASS' if f['pass'] else 'FAIL'} {name}: {f['value']:.2f} s (floor <= {f['floor']:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
