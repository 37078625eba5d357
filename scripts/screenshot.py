"""The README's screenshot: start the real app, search in headless Chromium, save what a visitor sees.

    python scripts/screenshot.py                      # writes assets/screenshot.png
    python scripts/screenshot.py --query "thunder" --out /tmp/shot.png

Starts ``python app.py`` on a free localhost port exactly as a user does (the shipped corpus and
checkpoint, offline), opens it at 1400 x 900 in Debian's chromium through its chromedriver
(selenium; the browser test drives the page the same way), types the query, searches, lets the
diffusion animation play to its last step and saves the page as it stands, unscrolled: the part
a first-time visitor sees without scrolling. Rerun it whenever the page changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180
SEARCH_TIMEOUT_S = 120
# The animation's frames as plotly.js holds them: the screenshot waits until they stop changing.
PLOT_VALUES = """
const g = document.querySelector('#trajectory-plot .js-plotly-plot');
if (!g || !g.data || !g.data.length) return null;
return JSON.stringify([g.data.map(d => [d.x, d.y, d.z]), (g.layout.title && g.layout.title.text) || '']);
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_app(log_path: Path, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """Start app.py; on a busy machine Gradio's own start-up probe of the page (3 s) can fail,
    so a start that exits with that message is tried again."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_app_once(log_path)
        except RuntimeError as err:
            if attempt == attempts or "localhost is not accessible" not in str(err):
                raise SystemExit(str(err)) from None
            print(f"app.py failed Gradio's start-up probe (a busy machine?); trying again ({attempt + 1}/{attempts})")
    raise AssertionError("unreachable")


def _start_app_once(log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() - started > START_TIMEOUT_S:
            proc.terminate()
            raise SystemExit(f"app.py did not answer within {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    print(f"app.py answered after {time.monotonic() - started:.1f} s")
                    return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.25)


def _browser(profile: Path, width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(chromedriver)):
        raise SystemExit("Debian's chromium and chromium-driver are needed: "
                         "sudo apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    # The viewport, not the window, is what a visitor sees: size the window so the page gets it.
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    return driver


def _wait(condition, what: str, timeout_s: float = SEARCH_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the element is not there yet, or is being redrawn
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def take(query: str, out: Path, width: int, height: int) -> None:
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="diffatr-screenshot-") as tmp:
        proc, url = _start_app(Path(tmp) / "app.log")
        try:
            driver = _browser(Path(tmp) / "profile", width, height)
            try:
                driver.get(url)
                box = _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#caption-box textarea"), "the caption box")
                box.clear()
                box.send_keys(query)
                driver.find_element(By.CSS_SELECTOR, "#text-search").click()
                _wait(lambda: [c for c in driver.find_elements(By.CSS_SELECTOR, "[id^=result-card-]")
                               if c.is_displayed() and c.text.strip()], "the results")
                # The animation has played out when its frame has not changed for two seconds.
                last, since = None, time.monotonic()
                deadline = time.monotonic() + SEARCH_TIMEOUT_S
                while time.monotonic() < deadline and time.monotonic() - since < 2.0:
                    state = driver.execute_script(PLOT_VALUES)
                    if state != last:
                        last, since = state, time.monotonic()
                    time.sleep(0.1)
                driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
                time.sleep(0.5)
                png = driver.get_screenshot_as_png()
            finally:
                driver.quit()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    from diffatr.fileio import atomic_write_bytes

    atomic_write_bytes(out, png)
    print(f"wrote {out} ({len(png) / 1024:.0f} KiB, {width} x {height})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="dog barking", help="the caption typed into the search box")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshot.png")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    take(args.query, args.out, args.width, args.height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
