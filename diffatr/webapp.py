"""DiffATR demo: search sounds by text or by sound, and watch the diffusion re-rank them.

UI only: builds the Gradio components, calls ``diffatr.demo`` (the logic, tested without a
browser) and ``diffatr.plots`` (figures), and converts types between them (Gradio's values
through ``diffatr.webapp_io``). Everything is
loaded from disk once at start-up; nothing is downloaded. Run ``python app.py`` in a checkout
(or on Hugging Face Spaces), or ``diffatr-demo`` after ``pip install "diffatr[app]"``.

Named API endpoints (``gradio_client``): search_text, search_audio, trajectory,
index_uploads, clear_uploads.

Settings from the environment: ``$DIFFATR_ANIMATION_SECONDS`` (how long an animation lasts,
3 s) or ``$DIFFATR_FRAME_SECONDS`` (a fixed pause per frame instead),
``$DIFFATR_ANIMATIONS`` (animations streamed at once), ``$DIFFATR_UPLOAD_WORKERS`` (uploads
indexed at once), ``$DIFFATR_QUOTA_*`` (the upload quotas: ``diffatr.uploads.UploadQuotas``),
``$DIFFATR_UPLOAD_DIR`` (where uploads are written).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

# Offline by design: no usage analytics, no hub look-ups from transformers.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from gradio.components.plot import PlotData  # noqa: E402

from diffatr import plots  # noqa: E402
from diffatr.demo import (  # noqa: E402
    ALPHA_MAX,
    MAX_RESULTS,
    PLACEHOLDER_QUERY,
    TEMPERATURE_MAX,
    TEMPERATURE_MIN,
    TOP_K_MAX,
    DemoApp,
    DemoError,
    DemoSession,
    frame_pause,
    hide_paths,
    hit_markdown,
    hits_table,
    iter_steps,
    md_escape,
    notices_of,
    skipped_table,
    status_line,
    upload_status,
)
from diffatr.serving import start_heap_trimmer  # noqa: E402
from diffatr.webapp_io import audio_query, upload_paths  # noqa: E402

log = logging.getLogger("diffatr.app")

# Animation pace (diffatr.demo.frame_pause): about 3 s from x_T to x_0 whatever the DDIM steps;
# $DIFFATR_FRAME_SECONDS fixes the pause per frame instead.
ANIMATION_SECONDS = float(os.environ.get("DIFFATR_ANIMATION_SECONDS", "3"))
FRAME_SECONDS = float(os.environ["DIFFATR_FRAME_SECONDS"]) if os.environ.get("DIFFATR_FRAME_SECONDS") else None
# Fair sharing of the CPU. Each kind of event has its own queue (a Gradio concurrency group),
# so that animations never hold up a search and one user's zip never holds up another's upload:
SEARCH_WORKERS = int(os.environ.get("DIFFATR_SEARCH_WORKERS", "4"))  # text searches at once (about 25 ms each)
AUDIO_SEARCH_WORKERS = 2  # audio searches at once (a decode + the audio encoder)
UPLOAD_WORKERS = int(os.environ.get("DIFFATR_UPLOAD_WORKERS", "4"))  # uploads indexed at once
ANIMATIONS = int(os.environ.get("DIFFATR_ANIMATIONS", "4"))  # animations streamed at once (the rest wait)
VIEW_WORKERS = 8  # drawing the results of a search (cards, first frame, heatmap)
# One torch thread per request ($DIFFATR_TORCH_THREADS overrides): the workers above already run
# requests side by side, and a single search is faster on one thread than on two (22 vs 35 ms
# here); under load it kept the API p95 under 1 s beside 8 animations (benchmarks/load.py).
TORCH_THREADS = int(os.environ.get("DIFFATR_TORCH_THREADS", "1"))
# How often queued users hear their place in the queue, in seconds. Gradio's default ("auto")
# tells every waiting user at every job start: with 32 waiting API clients that was ~450
# messages a second, all written on the event loop ($DIFFATR_QUEUE_STATUS_SECONDS overrides).
QUEUE_STATUS_SECONDS = os.environ.get("DIFFATR_QUEUE_STATUS_SECONDS", "1")

# Freed C heap goes back to the OS every so often ($DIFFATR_HEAP_TRIM_SECONDS; 0 = never): see
# diffatr.serving.start_heap_trimmer for what it fixed.
HEAP_TRIM_SECONDS = float(os.environ.get("DIFFATR_HEAP_TRIM_SECONDS", "10"))

torch.set_num_threads(TORCH_THREADS)
APP = DemoApp.load()
QUOTAS = APP.quotas
# An upload larger than the session's quota could never be indexed: Gradio refuses it at once.
MAX_FILE_SIZE = f"{max(1, int(QUOTAS.session_mb))}mb"
# The players get Gradio's cache copies (GRADIO_TEMP_DIR/<content hash>/<name>, made on first
# view: the corpus is 17 MB), never the corpus's own files: a file served in place shows the
# page its absolute path, i.e. where the package is installed.
log.info("upload quotas: %s", QUOTAS.describe())


# ----------------------------------------------------------------------------- glue


def _session(session: DemoSession | None) -> DemoSession:
    return session if isinstance(session, DemoSession) else DemoSession()


def _forget_session(session: Any) -> None:
    if isinstance(session, DemoSession):
        APP.forget(session)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """DemoError -> a red toast with its message (and an error for API clients); anything
    unexpected is logged and reported in one line, so the next request still works."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DemoError as err:
            # An expected user error: one log line, no traceback (Gradio prints one per gr.Error
            # unless told not to).
            log.warning("user error in %s: %s", fn.__name__, err)
            raise gr.Error(hide_paths(str(err)), title="Cannot do that", print_exception=False) from None
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 - the app must survive any input
            log.exception("unexpected error in %s", fn.__name__)  # a bug: its traceback, once
            raise gr.Error(f"Something went wrong ({type(err).__name__}: {hide_paths(str(err))}). Try another "
                           "input.", print_exception=False) from None

    return wrapper


def _show_notices(response: dict[str, Any]) -> None:
    for notice in notices_of(response):
        (gr.Warning if notice.level == "warning" else gr.Info)(notice.text)


def named(component: Any, setting: str) -> Any:
    """``component`` whose range errors name ``setting``: Gradio checks a slider's range before
    the handler runs, with a message that does not say which setting was out of range ("Value 0
    is less than minimum value 1."). The instance's own check is wrapped (a subclass of a
    Gradio component would make Gradio write a stub file beside this one)."""
    check = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return check(payload)
        except gr.Error as err:
            raise gr.Error(f"{setting}: {err.message}", title="Cannot do that", print_exception=False) from None

    component.preprocess = preprocess
    return component


def _settings(k: Any, steps: Any, top_k: Any, alpha: Any, seed: Any, temperature: Any):
    return APP.parse_settings(k=k, num_inference_steps=steps, top_k=top_k, alpha=alpha, seed=seed,
                              temperature=temperature)


# ----------------------------------------------------------------------------- handlers


@_user_errors
def search_text(caption: str, k: float, steps: float, top_k: float, alpha: float, seed: float,
                temperature: float, session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
    """Text -> audio: the k best clips for a caption, re-ranked by the diffusion model."""
    session = _session(session)
    response = APP.search_text(caption, _settings(k, steps, top_k, alpha, seed, temperature), session)
    _show_notices(response)
    return response, session


@_user_errors
def search_audio(audio: str | None, k: float, steps: float, top_k: float, alpha: float, seed: float,
                 temperature: float, session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
    """Audio -> text: the k best captions for a sound file or a recording."""
    session = _session(session)
    audio, sample_rate = audio_query(audio)
    response = APP.search_audio(audio, _settings(k, steps, top_k, alpha, seed, temperature), session,
                                sample_rate=sample_rate)
    _show_notices(response)
    return response, session


@_user_errors
def trajectory(session: DemoSession | None) -> dict[str, Any]:
    """The last search's DDIM trajectory in this session (x_t per step over the K candidates)."""
    return APP.trajectory(session)


@_user_errors
def index_uploads(files: list[str] | None, session: DemoSession | None,
                  progress: gr.Progress = gr.Progress()) -> tuple[dict[str, Any], DemoSession]:  # noqa: B008
    """Index your own sounds (files or zips) for this session only; bad files are listed."""
    session = _session(session)
    progress(0, desc="Indexing your sounds")

    def on_progress(done: int, total: int) -> None:
        progress((done, total), desc="Indexing your sounds", unit="files")

    report = APP.index_uploads(upload_paths(files), session, on_progress=on_progress)
    _show_notices(report)
    if report["indexed"]:
        gr.Info(f"Indexed {report['indexed']} of your sounds: search for them in the other tabs.")
    return report, session


@_user_errors
def clear_uploads(session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
    """Forget this session's uploaded sounds."""
    session = _session(session)
    return APP.clear_uploads(session), session


# ----------------------------------------------------------------------------- views (UI only)


def _step_plot(view: dict[str, Any], step: int) -> PlotData:
    """One DDIM step for ``gr.Plot``: the figure's plotly JSON built from plain lists (no Figure
    object, no validation), so an animation frame costs about what a search does."""
    return PlotData(type="plotly", plot=json.dumps(plots.trajectory_step_spec(view, step)))


def _trajectory_views(session: DemoSession | None) -> tuple[Any, Any, Any]:
    view = session.trajectory if isinstance(session, DemoSession) else None
    if view is None:
        return plots.empty_figure(), plots.empty_figure(""), gr.Slider(value=0, maximum=1)
    s = plots.num_steps(view)
    return (_step_plot(view, 0), plots.trajectory_heatmap(view),
            gr.Slider(value=0, maximum=s))


def show_text_results(response: dict[str, Any], session: DemoSession | None) -> list[Any]:
    hits = response.get("results", [])
    cards, players, groups = [], [], []
    for i in range(MAX_RESULTS):
        if i < len(hits):
            groups.append(gr.Group(visible=True))
            cards.append(hit_markdown(hits[i]))
            players.append(APP.audio_file(hits[i]["clip_id"], session))
        else:
            groups.append(gr.Group(visible=False))
            cards.append("")
            players.append(None)
    return [status_line(response), *groups, *cards, *players, *_trajectory_views(session)]


def _failed(what: str) -> str:
    return (f"**No results for {what}**: the search failed (the message above says why). Nothing shown "
            "here belongs to an earlier query.")


def _quoted(caption: Any) -> str:
    text = " ".join(str(caption or "").split())
    text = md_escape(text[:60] + "…" if len(text) > 60 else text)  # the user's text, shown as text
    return f"“{text}”" if text else "an empty caption"


def stale_text_results(caption: Any) -> list[Any]:
    """After a failed text search: clear the cards and the plots of the previous query, and say
    which query failed (the results of the last good query must not look like this one's)."""
    hidden = [gr.Group(visible=False) for _ in range(MAX_RESULTS)]
    return [_failed(_quoted(caption)), *hidden, *[""] * MAX_RESULTS, *[None] * MAX_RESULTS,
            *_trajectory_views(None)]


def stale_audio_results(audio: Any) -> list[Any]:
    """After a failed audio search: clear the caption table and the plots, name the query."""
    audio, _ = audio_query(audio)
    name = os.path.basename(str(audio)) if isinstance(audio, (str, os.PathLike)) and audio else "this sound"
    return [_failed(md_escape(name)), [], *_trajectory_views(None)]


def show_audio_results(response: dict[str, Any], session: DemoSession | None) -> list[Any]:
    return [status_line(response), hits_table(response), *_trajectory_views(session)]


def show_upload(report: dict[str, Any], session: DemoSession | None) -> list[Any]:
    if "indexed" in report:
        status = upload_status(report)
    else:
        status = f"Removed {report.get('removed', 0)} of your clips. Searching now: {report['corpus']}."
    return [status, skipped_table(report), _corpus_line(session)]


def _corpus_line(session: DemoSession | None) -> str:
    note = getattr(APP.model, "checkpoint_extra", {}).get("trained_on", "")
    return "Searching: " + APP.corpus_summary(session) + (f" · checkpoint: {note}" if note else "")


def draw_step(session: DemoSession | None, step: float) -> Any:
    view = session.trajectory if isinstance(session, DemoSession) else None
    if view is None:
        return plots.empty_figure()
    return _step_plot(view, int(step))


def play(session: DemoSession | None, start: float = 0):
    """Stream one figure per DDIM step, x_T -> x_0 (a generator: the plot updates live)."""
    view = session.trajectory if isinstance(session, DemoSession) else None
    if view is None:
        yield plots.empty_figure(), 0
        return
    pause = frame_pause(len(view["x_t"]), ANIMATION_SECONDS, FRAME_SECONDS)
    for step in iter_steps(view, int(start or 0)):
        if session.trajectory is not view:
            return  # a newer search in this session took over the plot
        yield _step_plot(view, step), step
        time.sleep(pause)


def play_from_start(session: DemoSession | None):
    yield from play(session, 0)


# ----------------------------------------------------------------------------- layout

INTRO = """
# DiffATR: search sounds with words, or words with sounds

A dual encoder ranks every clip by cosine similarity; then a small **diffusion model** starts
from noise (x_T) over the query's top **K** candidates and, in a few DDIM steps, *generates*
a distribution over them (x_0). The final score is `cosine + α · softmax(x_0)`.
Watch it happen on the right.
"""

CSS = """
#trajectory-plot, #trajectory-heatmap {min-height: 420px;}
.result-card {padding: 4px 8px;}
"""

# System fonts only: the page must render offline (no web-font downloads).
THEME = gr.themes.Default(font=[gr.themes.Font("system-ui"), "sans-serif"],
                          font_mono=[gr.themes.Font("ui-monospace"), "monospace"])

defaults = APP.defaults

# Gradio's upload cache is swept as often as the quotas say; files older than a session's
# time-to-live go (and the whole cache at a restart).
with gr.Blocks(title="DiffATR: audio-text retrieval with diffusion",
               delete_cache=(int(QUOTAS.cache_sweep_s), int(QUOTAS.session_ttl_s))) as demo:
    # A session idle for the time-to-live is deleted, and with it its uploaded files.
    session_state = gr.State(None, time_to_live=QUOTAS.session_ttl_s, delete_callback=_forget_session)
    gr.Markdown(INTRO)
    corpus_line = gr.Markdown(_corpus_line(None), elem_id="corpus-line")

    with gr.Accordion("Search settings", open=True):
        with gr.Row():
            k_in = named(gr.Slider(1, MAX_RESULTS, value=defaults.k, step=1, label="Results shown (k)",
                                       elem_id="k-slider"), "k (results shown)")
            steps_in = named(gr.Slider(1, APP.num_train_timesteps, value=defaults.num_inference_steps, step=1,
                                           label="DDIM steps", info=f"1..T = {APP.num_train_timesteps}",
                                           elem_id="steps-slider"), "steps (DDIM steps)")
            top_k_in = named(gr.Slider(1, TOP_K_MAX, value=defaults.top_k, step=1, label="K: candidates re-ranked",
                                           info="clamped to the corpus size", elem_id="top-k-slider"),
                             "top_k (K, candidates re-ranked)")
            alpha_in = named(gr.Slider(0, ALPHA_MAX, value=defaults.alpha, step=0.05,
                                           label="α: weight of the diffusion score", elem_id="alpha-slider"), "alpha")
            seed_in = named(gr.Number(value=defaults.seed, precision=0, minimum=0, label="Seed of x_T",
                                          info="same seed, same trajectory", elem_id="seed-box"), "seed")
            temperature_in = named(gr.Slider(
                TEMPERATURE_MIN, TEMPERATURE_MAX, value=defaults.temperature, step=0.001, label="Fusion temperature",
                elem_id="temperature-slider", info=f"softmax(x̂0 / T) in the fused score; 1/CE scale = "
                                                   f"{1 / APP.model.config.diffusion.ce_scale:g} is the trained sharpness"),
                "temperature")
    knobs = [k_in, steps_in, top_k_in, alpha_in, seed_in, temperature_in]

    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            with gr.Tabs():
                with gr.Tab("Text → audio", id="text"):
                    with gr.Row():
                        caption_in = gr.Textbox(label="Describe a sound", placeholder=f"e.g. {PLACEHOLDER_QUERY}",
                                                scale=5, max_lines=3, elem_id="caption-box")
                        text_btn = gr.Button("Search", variant="primary", scale=1, elem_id="text-search")
                    gr.Examples(APP.example_queries(), inputs=[caption_in], label="Try")
                    text_status = gr.Markdown(elem_id="text-status")
                    groups, cards, players = [], [], []
                    for i in range(MAX_RESULTS):
                        with gr.Group(visible=False, elem_classes=["result-card"]) as group:
                            cards.append(gr.Markdown(elem_id=f"result-card-{i}"))
                            players.append(gr.Audio(interactive=False, show_label=False, elem_id=f"result-audio-{i}"))
                        groups.append(group)

                with gr.Tab("Audio → text", id="audio"):
                    audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                        label="A sound to search with (upload or record)", elem_id="audio-query")
                    audio_btn = gr.Button("Search", variant="primary", elem_id="audio-search")
                    gr.Examples([[p] for p in APP.example_audio()], inputs=[audio_in], label="Try a corpus clip")
                    audio_status = gr.Markdown(elem_id="audio-status")
                    captions_out = gr.Dataframe(
                        headers=["#", "caption", "clip", "fused", "cosine", "diffusion", "moved"],
                        label="Ranked captions (fused = cosine + α · diffusion; moved = places gained)",
                        interactive=False, elem_id="caption-table", wrap=True,
                        column_widths=["6%", "27%", "10%", "12%", "14%", "18%", "13%"])

                with gr.Tab("Your sounds", id="uploads"):
                    gr.Markdown("Add your own sounds: several audio files, or a `.zip` of them (a `NAME.txt` beside "
                                "`NAME.wav` gives its captions, one per line). They are searchable **in this "
                                "session only**; the shipped corpus is not changed. Limits: "
                                + md_escape(QUOTAS.describe()) + ".")
                    files_in = gr.File(file_count="multiple", label="Audio files or a .zip", elem_id="upload-files")
                    with gr.Row():
                        index_btn = gr.Button("Index my sounds", variant="primary", elem_id="index-button")
                        clear_btn = gr.Button("Forget my sounds", elem_id="clear-button")
                    upload_status_out = gr.Markdown(elem_id="upload-status")
                    skipped_out = gr.Dataframe(headers=["file", "why it was skipped"],
                                               label="Files that could not be used", interactive=False, wrap=True,
                                               column_widths=["30%", "70%"], elem_id="skipped-table")
                    with gr.Accordion("Upload report (JSON, as the API returns it)", open=False):
                        upload_json = gr.JSON(label="report")

        with gr.Column(scale=6):
            gr.Markdown("### Watch the diffusion\nBars: the distribution the model generates over the "
                        "query's K candidates (top = most similar by cosine), from the start noise (step 0) "
                        "to x_0 (last step): softmax(x̂0 × CE scale), the sharpness it was trained at. "
                        "Orange = the final top results, with their fused rank and the diffusion's own (Gen) "
                        "rank. The final score fuses cosine + α · softmax(x̂0 / T) with the fusion temperature "
                        "T of the settings (1 by default, where this distribution is nearly flat: on the "
                        "shipped model the diffusion then rarely changes the cosine order; see the README). "
                        "Press Play, or drag the slider to any step (no recomputation).")
            step_plot = gr.Plot(plots.empty_figure(), label="The distribution over the candidates, step by step", elem_id="trajectory-plot")
            with gr.Row():
                play_btn = gr.Button("▶ Play", elem_id="play-button", scale=1, min_width=80)
                pause_btn = gr.Button("❚❚ Pause", elem_id="pause-button", scale=1, min_width=80)
                step_in = gr.Slider(0, 1, value=0, step=1, label="DDIM step (0 = x_T noise … last = x_0)",
                                    elem_id="step-slider", scale=4)
            heatmap = gr.Plot(plots.empty_figure(""), label="Whole trajectory", elem_id="trajectory-heatmap")
    with gr.Accordion("Search response and trajectory (JSON, as the API returns them)", open=False):
        response_json = gr.JSON(label="response")
        traj_btn = gr.Button("Show the trajectory data", size="sm")
        traj_json = gr.JSON(label="trajectory")

    traj_outputs = [step_plot, heatmap, step_in]
    animation = [step_plot, step_in]

    # Concurrency groups (see SEARCH_WORKERS ...): each queue below waits only for its own kind.
    views = dict(concurrency_limit=VIEW_WORKERS, concurrency_id="views")
    animated = dict(concurrency_limit=ANIMATIONS, concurrency_id="animation")

    text_search = gr.on([text_btn.click, caption_in.submit], search_text,
                        inputs=[caption_in, *knobs, session_state], outputs=[response_json, session_state],
                        api_name="search_text", concurrency_limit=SEARCH_WORKERS, concurrency_id="search_text")
    text_shown = text_search.success(show_text_results, [response_json, session_state],
                                     [text_status, *groups, *cards, *players, *traj_outputs],
                                     api_visibility="private", show_progress="hidden", **views)
    text_played = text_shown.success(play_from_start, [session_state], animation, api_visibility="private",
                                     show_progress="hidden", **animated)
    text_search.failure(stale_text_results, [caption_in], [text_status, *groups, *cards, *players, *traj_outputs],
                        api_visibility="private", show_progress="hidden", **views)

    audio_search = audio_btn.click(search_audio, inputs=[audio_in, *knobs, session_state],
                                   outputs=[response_json, session_state], api_name="search_audio",
                                   concurrency_limit=AUDIO_SEARCH_WORKERS, concurrency_id="search_audio")
    audio_shown = audio_search.success(show_audio_results, [response_json, session_state],
                                       [audio_status, captions_out, *traj_outputs], api_visibility="private",
                                       show_progress="hidden", **views)
    audio_played = audio_shown.success(play_from_start, [session_state], animation, api_visibility="private",
                                       show_progress="hidden", **animated)
    audio_search.failure(stale_audio_results, [audio_in], [audio_status, captions_out, *traj_outputs],
                         api_visibility="private", show_progress="hidden", **views)

    replay = play_btn.click(play, [session_state, step_in], animation, api_visibility="private",
                            show_progress="hidden", **animated)
    pause_btn.click(None, cancels=[replay, text_played, audio_played])
    # Only the user's own moves redraw (programmatic updates from Play do not fire these).
    step_in.release(draw_step, [session_state, step_in], step_plot, api_visibility="private",
                    concurrency_limit=None, show_progress="hidden", trigger_mode="always_last")
    step_in.input(draw_step, [session_state, step_in], step_plot, api_visibility="private",
                  concurrency_limit=None, show_progress="hidden", trigger_mode="always_last")
    traj_btn.click(trajectory, [session_state], traj_json, api_name="trajectory", **views)

    # Uploads of different sessions run side by side (up to UPLOAD_WORKERS); one session's
    # uploads run one after the other (DemoApp.index_uploads locks the session).
    indexed = index_btn.click(index_uploads, [files_in, session_state], [upload_json, session_state],
                              api_name="index_uploads", concurrency_limit=UPLOAD_WORKERS, concurrency_id="uploads")
    indexed.success(show_upload, [upload_json, session_state], [upload_status_out, skipped_out, corpus_line],
                    api_visibility="private", show_progress="hidden", **views)
    cleared = clear_btn.click(clear_uploads, [session_state], [upload_json, session_state], api_name="clear_uploads",
                              concurrency_limit=None)
    cleared.success(show_upload, [upload_json, session_state], [upload_status_out, skipped_out, corpus_line],
                    api_visibility="private", show_progress="hidden", **views)

demo.queue(status_update_rate=QUEUE_STATUS_SECONDS if QUEUE_STATUS_SECONDS == "auto" else float(QUEUE_STATUS_SECONDS))


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(0)  # a normal exit, so that atexit deletes this run's uploads (a Space stops with SIGTERM)


def main() -> None:
    """Serve the demo (``python app.py``, or the ``diffatr-demo`` command)."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start_heap_trimmer(HEAP_TRIM_SECONDS)
    demo.launch(theme=THEME, css=CSS, max_file_size=MAX_FILE_SIZE)


if __name__ == "__main__":
    main()
