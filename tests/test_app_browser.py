"""The real page in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

Types a caption, searches, sees the audio players and the trajectory plot, checks that the plot
is streamed step by step and that moving the step slider redraws it, searches by sound, and
saves a screenshot of each tab (into $DIFFATR_SCREENSHOT_DIR, e.g. assets/screenshots, when set).
"""

from __future__ import annotations

import contextlib

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from app_server import EXAMPLES, ROOT, library_top, running_app

from diffatr.config import RetrievalConfig

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("Debian's chromium and chromium-driver are not installed "
                "(apt-get install -y chromium chromium-driver; .ci/run does this)", allow_module_level=True)
pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT_S = 60
STEPS = 20  # DDIM steps the page is set to
LAST = f"step {STEPS} / {STEPS}"
# The plot's figure as plotly.js holds it (gr.Plot renders with Plotly.react into this div).
PLOT_STATE = """
const g = document.querySelector(arguments[0] + ' .js-plotly-plot');
if (!g || !g.data || !g.data.length) return null;
const d = g.data[0];
return {values: Array.from((d.orientation === 'h' ? d.x : d.y) || []), labels: Array.from((d.orientation === 'h' ? d.y : d.x) || []),
        z: d.z ? d.z.length : 0, columns: d.z && d.z.length ? d.z[0].length : 0,
        title: (g.layout.title && g.layout.title.text) || '', n: g.data.length};
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("browser")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1400,1560",
                 f"--user-data-dir={tmp / 'profile'}"):
        options.add_argument(flag)
    with running_app(tmp / "app.log") as (url, _):
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(url)
            yield driver
        finally:
            driver.quit()


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DIFFATR_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Records the text of every title the step plot draws (a MutationObserver on the page: the
# polling above can miss frames on a loaded machine, the DOM cannot).
RECORD_TITLES = """
window.__titles = [];
new MutationObserver(() => {
  const t = document.querySelector('#trajectory-plot .gtitle');
  const text = t ? t.textContent : '';
  if (text && window.__titles[window.__titles.length - 1] !== text) window.__titles.push(text);
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


def _plot(driver, selector: str = "#trajectory-plot") -> dict | None:
    return driver.execute_script(PLOT_STATE, selector)


def _step(state: dict | None) -> int:
    """The DDIM step a plot shows, from its title ("step 12 / 50 ..."); -1 if none."""
    match = re.match(r"step (\d+) /", (state or {}).get("title", ""))
    return int(match.group(1)) if match else -1


def _wait(driver, condition, what: str):
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d))
    except Exception as err:  # a timeout: say what did not show up
        raise AssertionError(f"timed out waiting for {what}") from err


RECTS = """return Object.fromEntries(Array.from(arguments).map(s => {const e = document.querySelector(s);
  const r = e ? e.getBoundingClientRect() : null;
  return [s, r && r.height ? {left: r.left, top: r.top, right: r.right, bottom: r.bottom} : null];}))"""


def test_a_first_visit_at_1400_by_900_shows_search_results_and_animation_without_scrolling(page) -> None:
    driver = page
    driver.set_window_size(1400, 900)  # headless Chromium: a viewport of about 1400 x 760
    try:
        driver.get(driver.current_url)  # a fresh page, as a first-time visitor sees it
        box = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#caption-box textarea"), "the caption box")
        advanced = driver.find_element(By.CSS_SELECTOR, "#advanced")
        assert "Advanced settings" in advanced.text  # collapsed: its controls are not even drawn
        assert not [e for e in driver.find_elements(By.CSS_SELECTOR, "#k-slider") if e.is_displayed()]
        box.send_keys("a dog barking")
        driver.find_element(By.CSS_SELECTOR, "#text-search").click()
        _wait(driver, lambda d: (s := _plot(d)) and s["title"].startswith("step"), "the animation")
        _wait(driver, lambda d: _players(d, "result"), "the results' players")
        assert driver.execute_script("return window.scrollY") == 0
        height = driver.execute_script("return window.innerHeight")
        rects = driver.execute_script(RECTS, "#caption-box", "#text-search", "#text-examples", "#result-card-0",
                                      "#result-audio-0", "#trajectory-help", "#trajectory-plot")
        for selector in ("#caption-box", "#text-search", "#text-examples", "#result-card-0", "#trajectory-help",
                         "#trajectory-plot"):
            assert rects[selector] and 0 <= rects[selector]["top"] and rects[selector]["bottom"] <= height, \
                (selector, rects[selector], height)
        assert rects["#result-audio-0"]["top"] < height - 50, rects  # the first player's controls are in view
        assert rects["#trajectory-plot"]["left"] >= rects["#result-card-0"]["right"]  # beside the results
    finally:
        driver.set_window_size(1400, 1560)


def test_text_search_plays_the_diffusion_and_the_slider_redraws(page, tmp_path: Path) -> None:
    driver = page
    box = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#caption-box textarea"), "the caption box")
    # Fewer DDIM steps than the default 50 (a shorter animation, and the control is exercised),
    # under "Advanced settings", with its plain label and its notation.
    driver.find_element(By.XPATH, "//*[@id='advanced']//*[contains(text(), 'Advanced settings')]").click()
    steps = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#steps-slider input[type=number]"), "the steps")
    assert "Diffusion steps" in driver.find_element(By.CSS_SELECTOR, "#steps-slider").text
    assert "DDIM steps" in driver.find_element(By.CSS_SELECTOR, "#steps-slider").text
    steps.send_keys(Keys.CONTROL, "a")
    steps.send_keys(str(STEPS), Keys.TAB)
    box.send_keys(Keys.CONTROL, "a")  # the box may hold an earlier test's query
    box.send_keys("a dog barking")
    driver.execute_script(RECORD_TITLES)  # every title the plot draws, however fast they come
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()

    # The figures stream in one DDIM step at a time: several distinct steps are drawn.
    titles, deadline = set(), time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = _plot(driver)
        if state and state["title"].startswith("step"):
            titles.add(state["title"].split(":")[0].split(" (")[0])
            if state["title"].startswith(LAST):
                break
        time.sleep(0.03)
    titles |= {t.split(":")[0].split(" (")[0] for t in driver.execute_script("return window.__titles || []")}
    assert LAST in titles, f"the animation did not reach x_0; saw {sorted(titles)}"
    assert len(titles) >= 5, f"the plot was not streamed step by step; saw {sorted(titles)}"

    final = _plot(driver)
    assert len(final["labels"]) == 10 and final["n"] == 1  # all ten clips re-ranked, one bar each
    assert _plot(driver, "#trajectory-heatmap")["z"] == 10  # a row per candidate ...
    assert _plot(driver, "#trajectory-heatmap")["columns"] == STEPS + 1  # ... across the whole path: x_T .. x_0
    players = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[id^=result-audio-] audio")
                    or d.find_elements(By.CSS_SELECTOR, "[id^=result-audio-] [data-testid=waveform-controls]"),
                    "audio players")
    assert players
    # no path of the install reaches the page: the players play Gradio's cache copies, not the
    # corpus files, and the only server paths shown are those copies, in the run's cache folder
    assert str(ROOT / "assets") not in driver.page_source and "site-packages" not in driver.page_source
    served = re.findall(r"gradio_api/file=([^\"'&?]+)", driver.page_source)
    assert served and all(re.search(r"/diffatr-uploads/run-\d+-[0-9a-f]{8}/cache/[0-9a-f]{20,}/[^/]+$", path)
                          for path in served), served
    # the cards show the library's top results for these knobs, in order (waited for: the cards
    # may redraw a moment after the plot's last frame)
    expected = library_top("a dog barking", k=2, steps=STEPS, top_k=32, alpha=1.0, seed=0)

    def cards(d):
        with contextlib.suppress(Exception):  # a card redrawn between the lookup and the read
            texts = [c.text for c in d.find_elements(By.CSS_SELECTOR, "[id^=result-card-]") if c.is_displayed()]
            if len(texts) >= 2 and all(caption in card for card, (_, caption, *_) in zip(texts, expected)):
                return texts
        return None

    shown = _wait(driver, cards, f"the library's top 2 on the cards: {[e[0] for e in expected]}")
    assert len(shown) == RetrievalConfig.num_results, shown  # 10 results by default: here all ten clips
    assert "CC0-1.0" in shown[0] and "fused" in shown[0]

    # A click on the slider's track redraws that step without a new search.
    track = driver.find_element(By.CSS_SELECTOR, "#step-slider input[type=range]")
    width = track.size["width"]
    ActionChains(driver).move_to_element_with_offset(track, -width // 2 + 5 + width // 5, 0).click().perform()
    moved = _wait(driver, lambda d: (s := _plot(d)) and not s["title"].startswith(LAST) and s, "a redraw")
    assert moved["values"] != final["values"]
    # Typing a step into the slider's box: step 0 is the start noise x_T.
    number = driver.find_element(By.CSS_SELECTOR, "#step-slider input[type=number]")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys("0", Keys.ENTER)
    start = _wait(driver, lambda d: (s := _plot(d)) and s["title"].startswith("step 0 ") and s, "step 0")
    assert start["values"] != final["values"] and start["values"] != moved["values"]
    assert start["labels"] == final["labels"]  # the same candidates, in cosine order, at every step
    # noise in, a peaked distribution out: the generated x_0 puts more mass on its top candidate
    assert max(final["values"]) > max(start["values"])

    # Play replays the stored trajectory from the slider's step; Pause stops it where it is.
    driver.execute_script(RECORD_TITLES)
    driver.find_element(By.CSS_SELECTOR, "#play-button").click()
    _wait(driver, lambda d: any(1 <= _step({"title": t}) <= STEPS // 3
                                for t in d.execute_script("return window.__titles || []")), "Play to start")
    driver.find_element(By.CSS_SELECTOR, "#pause-button").click()
    time.sleep(1.0)
    paused = _step(_plot(driver))
    time.sleep(1.0)
    assert _step(_plot(driver)) == paused < STEPS
    driver.find_element(By.CSS_SELECTOR, "#play-button").click()
    _wait(driver, lambda d: (s := _plot(d)) and s["title"].startswith(LAST), "the replay to finish")
    assert _plot(driver)["values"] == final["values"]  # the same x_0 as the search drew
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(_screenshot_dir(tmp_path) / "text_to_audio.png"))


def _closed_toasts(driver) -> bool:
    """Closes every toast on show; True once none is left."""
    for button in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        with contextlib.suppress(Exception):  # a toast may go between the lookup and the click
            if button.is_displayed():
                button.click()
    return not [t for t in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]") if t.is_displayed()]


def test_a_failed_search_does_not_leave_the_previous_results_looking_current(page) -> None:
    driver = page
    _wait(driver, lambda d: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Text')]"), "the tabs").click()
    box = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#caption-box textarea"), "the caption box")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("a cat meowing")
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()

    def shown(d):
        return [c.text for c in d.find_elements(By.CSS_SELECTOR, "[id^=result-card-]") if c.is_displayed()]

    _wait(driver, lambda d: "a cat meowing" in d.find_element(By.CSS_SELECTOR, "#text-status").text and shown(d),
          "the good query's results, with its status naming it")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("!!!")  # no letters or digits: refused with a message
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()
    status = _wait(driver, lambda d: (t := d.find_element(By.CSS_SELECTOR, "#text-status").text)
                   and "No results for" in t and t, "the failed query's status")
    assert "!!!" in status and "cat" not in status
    assert "no letters or digits" in status  # the reason itself, not a pointer to a toast that fades
    assert not shown(driver)  # the cat cards are gone, not left under the new query
    # A second error in a row gets its own message, and it stays until the next search.
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("???")
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()
    status = _wait(driver, lambda d: (t := d.find_element(By.CSS_SELECTOR, "#text-status").text)
                   and "???" in t and t, "the second failed query's status")
    assert "no letters or digits" in status and "!!!" not in status
    # The toasts go (closed here, as a user would or their timer does; a timer paused by the
    # pointer resting on a toast made waiting for it flaky), and the status line keeps the message.
    _wait(driver, _closed_toasts, "the toasts to go")
    assert driver.find_element(By.CSS_SELECTOR, "#text-status").text == status


def test_the_users_text_is_shown_as_text_never_as_markup(page) -> None:
    driver = page
    _wait(driver, lambda d: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Text')]"), "the tabs").click()
    box = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#caption-box textarea"), "the caption box")
    query = '<b>bold</b> dog <a href="https://example.com/x">barking</a>'
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(query)
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()
    _wait(driver, lambda d: (s := _plot(d)) and "x_0" in s["title"] and "bold" in s["title"],
          "the query's animation")
    title = driver.execute_script("return document.querySelector('#trajectory-plot .gtitle').textContent")
    assert "<b>bold</b>" in title, title  # Plotly drew the tags as text
    status = _text(driver, "#text-status")
    assert "<b>bold</b>" in status and 'href="https://example.com/x"' in status, status
    links = driver.execute_script("return Array.from(document.querySelectorAll(\"a[href^='https://example.com']\"))"
                                  ".map(a => (a.closest('[id]') || {}).id + ': ' + a.outerHTML)")
    assert not links  # no link anywhere
    assert not driver.find_elements(By.CSS_SELECTOR, "#text-status b, #trajectory-plot .gtitle b")


def test_audio_search_tab(page, tmp_path: Path) -> None:
    driver = page
    _wait(driver, lambda d: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Audio')]"),
          "the tabs").click()
    upload = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#audio-query input[type=file]"),
                   "the audio upload")
    upload.send_keys(str(EXAMPLES / "cat.mp3"))
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-query audio")
          or d.find_elements(By.CSS_SELECTOR, "#audio-query [data-testid=waveform-controls]"), "the uploaded clip")
    driver.find_element(By.CSS_SELECTOR, "#audio-search").click()
    table = _wait(driver, lambda d: (t := d.find_element(By.CSS_SELECTOR, "#caption-table").text) and "meow" in t and t,
                  "ranked captions")
    assert "cat" in table
    _wait(driver, lambda d: (s := _plot(d)) and s["title"].startswith(LAST) and "cat.mp3" in s["title"],
          "the audio query's diffusion")
    assert len(_plot(driver)["labels"]) == 20  # the candidates are the 20 captions
    # beside the captions: the clips that sound like it, playable, never the query's own clip
    similar = _wait(driver, lambda d: _shown_cards(d, "similar"), "the similar sounds")
    assert len(similar) == 9 and not any(card.startswith("#1 · cat") for card in similar)  # 10 clips less the cat
    assert "similarity" in similar[0] and "like “cat.mp3”" in _text(driver, "#similar-status")
    assert _players(driver, "similar")

    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(_screenshot_dir(tmp_path) / "audio_to_text.png"))

    # A file that is not audio: a clear message, and the page still works.
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    driver.find_element(By.CSS_SELECTOR, "#audio-query button[aria-label='Clear']").click()
    upload = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#audio-query input[type=file]"), "upload")
    upload.send_keys(str(bad))
    time.sleep(1.0)
    driver.find_element(By.CSS_SELECTOR, "#audio-search").click()
    _wait(driver, lambda d: "Could not read not_audio.wav" in d.find_element(By.TAG_NAME, "body").text,
          "the error message")
    # ... and the next query works.
    driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Text')]").click()
    box = driver.find_element(By.CSS_SELECTOR, "#caption-box textarea")
    box.clear()
    box.send_keys("an owl hooting")
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()
    _wait(driver, lambda d: (s := _plot(d)) and s["title"].startswith(LAST) and "owl" in s["title"],
          "the next query after an error")


def _shown_cards(driver, prefix: str) -> list[str]:
    return [c.text for c in driver.find_elements(By.CSS_SELECTOR, f"[id^={prefix}-card-]") if c.is_displayed()]


def _players(driver, prefix: str) -> list:
    return (driver.find_elements(By.CSS_SELECTOR, f"[id^={prefix}-audio-] audio")
            or driver.find_elements(By.CSS_SELECTOR, f"[id^={prefix}-audio-] [data-testid=waveform-controls]"))


def _card_clip(card: str) -> str:
    """The clip id of a result card's text ("#1 · horse (+2 variants): a horse neighs ...")."""
    return card.split("·")[1].split(":")[0].split("(")[0].strip()


def _text(driver, selector: str) -> str:
    """An element's text whether or not the browser has painted it yet (``.text`` is only the
    painted text, and a loaded machine paints late)."""
    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent") or ""


def _click(driver, selector: str) -> None:
    """Click a button once it is shown and enabled, in view (a card that is still being drawn
    can swallow the click)."""
    button = _wait(driver, lambda d: (b := d.find_element(By.CSS_SELECTOR, selector)) and b.is_displayed()
                   and b.is_enabled() and b, selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def test_more_like_this_from_a_text_result_and_from_a_similar_sound(page) -> None:
    driver = page
    _wait(driver, lambda d: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Text')]"), "the tabs").click()
    box = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#caption-box textarea"), "the caption box")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("a horse neighing")
    driver.find_element(By.CSS_SELECTOR, "#text-search").click()
    clip = library_top("a horse neighing", k=1, steps=STEPS, top_k=32, alpha=1.0, seed=0)[0][0]
    _wait(driver, lambda d: (c := _shown_cards(d, "result")) and _card_clip(c[0]) == clip, "the text results")
    _wait(driver, lambda d: _players(d, "result"), "the results' players")  # the cards are drawn
    _click(driver, "#result-like-0")
    # the audio tab opens with that clip as its query: its captions and the sounds like it
    status = _wait(driver, lambda d: f"like “{clip}”" in (t := _text(d, "#similar-status")) and t,
                   "the sounds like the clip")
    similar = _wait(driver, lambda d: _shown_cards(d, "similar"), "the similar sounds' cards")
    assert clip not in [_card_clip(card) for card in similar], (status, similar)
    assert driver.find_element(By.CSS_SELECTOR, "#caption-table").is_displayed()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-query audio")
          or d.find_elements(By.CSS_SELECTOR, "#audio-query [data-testid=waveform-controls]"), "the clip as the query")
    # ... and from a similar sound, again
    second = _card_clip(similar[0])
    _click(driver, "#similar-like-0")
    _wait(driver, lambda d: f"like “{second}”" in _text(d, "#similar-status"), "the sounds like the similar sound")
    again = _wait(driver, lambda d: (c := _shown_cards(d, "similar")) and second not in map(_card_clip, c) and c,
                  "new similar cards")
    assert clip in map(_card_clip, again)  # the first clip is like the second one again


def test_upload_tab_indexes_good_files_and_lists_bad_ones(page, tmp_path: Path) -> None:
    driver = page
    _wait(driver, lambda d: d.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Your sounds')]"),
          "the tabs").click()
    notes = tmp_path / "notes.txt.wav"
    notes.write_text("not a sound")
    files = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#upload-files input[type=file]"), "the file input")
    files.send_keys(f"{EXAMPLES / 'pig.mp3'}\n{notes}")
    # (the file list shows a name as stem and suffix in two elements)
    _wait(driver, lambda d: "notes.txt" in d.find_element(By.CSS_SELECTOR, "#upload-files").get_attribute(
        "textContent"), "the upload")
    driver.find_element(By.CSS_SELECTOR, "#index-button").click()
    status = _wait(driver, lambda d: (t := d.find_element(By.CSS_SELECTOR, "#upload-status").text) and t, "the report")
    assert "Indexed 1 file, skipped 1" in status and "1 of your clips" in status
    assert "notes.txt.wav" in driver.find_element(By.CSS_SELECTOR, "#skipped-table").text
    assert "1 of your clips" in driver.find_element(By.CSS_SELECTOR, "#corpus-line").text
