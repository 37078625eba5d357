"""DiffATR demo: search sounds by text or by sound, and watch the diffusion re-rank them.

UI only: builds the Gradio components, calls ``diffatr.demo`` (the logic, tested without a
browser) and ``diffatr.plots`` (figures), and converts types between them (Gradio's values
through ``diffatr.webapp_io``). Importing this module does nothing: ``main()`` sets the
offline environment and torch's threads, loads the app (``DemoApp.load().start()``) and
serves ``build_demo(app)``. Run ``python app.py`` in a checkout (or on Hugging Face Spaces), or
``diffatr-demo`` after ``pip install "diffatr[app]"``. Gradio itself is imported on first use,
after the offline environment is set (its import reads the hub's settings).

Named API endpoints (``gradio_client``): search_text, search_audio, search_similar, trajectory,
index_uploads, clear_uploads.

Settings from the environment (``ServerSettings.from_env``): ``$DIFFATR_ANIMATION_SECONDS``
(how long an animation lasts, 3 s) or ``$DIFFATR_FRAME_SECONDS`` (a fixed pause per frame
instead), ``$DIFFATR_SEARCH_WORKERS``, ``$DIFFATR_ANIMATIONS`` (animations streamed at once),
``$DIFFATR_UPLOAD_WORKERS`` (uploads indexed at once), ``$DIFFATR_TORCH_THREADS``,
``$DIFFATR_QUEUE_STATUS_SECONDS``, ``$DIFFATR_HEAP_TRIM_SECONDS``, ``$DIFFATR_QUOTA_*`` (the
upload quotas: ``diffatr.uploads.UploadQuotas``), ``$DIFFATR_UPLOAD_DIR`` (where uploads are
written), ``$DIFFATR_APP_INDEX`` (the corpus searched).
"""

from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from diffatr import plots
from diffatr.config import knob_fields
from diffatr.demo import (
    MAX_RESULTS,
    PLACEHOLDER_QUERY,
    SEED_MAX,
    TOP_K_MAX,
    DemoApp,
    DemoError,
    DemoSession,
    frame_pause,
    hide_paths,
    hit_markdown,
    hits_table,
    iter_steps,
    last_trajectory,
    md_escape,
    notices_of,
    similar_markdown,
    similar_status,
    skipped_table,
    status_line,
    upload_status,
)
from diffatr.webapp_io import audio_query, upload_paths

log = logging.getLogger("diffatr.app")

# Offline by design: no usage analytics, no hub look-ups from huggingface_hub or transformers.
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event (its
# monitoring page); by default at every one, so each search paid for a table as long as the
# requests served so far. Once every 1,000 events (benchmarks.md "The app under load").
QUEUE_ENVIRONMENT = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": "1000"}
KNOBS = {f.name: f for f in knob_fields()}


def _gradio() -> Any:
    """The gradio module, imported on first use (after ``main`` set the offline environment)."""
    import gradio

    return gradio


@dataclass(frozen=True)
class ServerSettings:
    """How the server shares its CPU and paces animations (docs/pitfalls.md, "Serving the demo").

    Each kind of event has its own queue (a Gradio concurrency group), so that animations never
    hold up a search and one user's zip never holds up another's upload.
    """

    animation_seconds: float = 3.0  # an animation from x_T to x_0 lasts this long, whatever the steps ...
    frame_seconds: float | None = None  # ... or each frame this long (None: from animation_seconds)
    search_workers: int = 4  # text searches at once
    audio_search_workers: int = 2  # audio searches at once (a decode and the audio encoder each)
    upload_workers: int = 4  # uploads indexed at once
    animations: int = 4  # animations streamed at once (the rest wait)
    view_workers: int = 8  # drawing the results of a search (cards, first frame, heatmap)
    # Torch threads per process: the workers above already run requests side by side, and one
    # search is faster on one thread than on two.
    torch_threads: int = 1
    # How often queued users hear their place in the queue, in seconds ("auto": Gradio's
    # default, at every job start, which floods the event loop under load).
    queue_status_seconds: str = "1"
    heap_trim_seconds: float = 10.0  # freed C heap goes back to the OS this often (0 = never)
    # Who a client is, for its share of the upload cache: "peer" (the connection's address),
    # "forwarded" (the first X-Forwarded-For address: behind a proxy, where every peer is the
    # proxy) or "auto" (forwarded on Hugging Face Spaces, where $SPACE_ID is set; else peer).
    client_address: str = "auto"

    def __post_init__(self) -> None:
        if self.client_address not in ("auto", "peer", "forwarded"):
            raise ValueError(f"$DIFFATR_CLIENT_ADDRESS must be auto, peer or forwarded, got {self.client_address!r}")

    def forwarded(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether clients are named by X-Forwarded-For (``client_address``)."""
        if self.client_address == "auto":
            return bool((os.environ if environ is None else environ).get("SPACE_ID"))
        return self.client_address == "forwarded"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """The defaults, with ``$DIFFATR_<FIELD>`` values where set (``DIFFATR_ANIMATIONS`` ...)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get("DIFFATR_" + f.name.upper())
            if raw:
                kind = {"int": int, "str": str}.get(f.type, float)
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    raise ValueError(f"$DIFFATR_{f.name.upper()} must be a {kind.__name__}, got {raw!r}") from None
        return cls(**values)


# ----------------------------------------------------------------------------- glue


def _new_session() -> DemoSession:
    """A page's first session (a function: Gradio would serialise a dataclass given as the value)."""
    return DemoSession()


def _session(session: DemoSession | None) -> DemoSession:
    return session if isinstance(session, DemoSession) else DemoSession()


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """DemoError -> a red toast with its message (and an error for API clients); anything
    unexpected is logged and reported in one line, so the next request still works. The
    message is also kept in the request's session (``DemoSession.last_error``): the page's
    status line shows it until the next search (a toast fades after a few seconds)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gr = _gradio()
        session = next((a for a in (*args, *kwargs.values()) if isinstance(a, DemoSession)), None)
        if session is not None:
            session.last_error = None
        try:
            return fn(*args, **kwargs)
        except DemoError as err:
            # An expected user error: one log line, no traceback (Gradio prints one per gr.Error
            # unless told not to).
            log.warning("user error in %s: %s", fn.__name__, err)
            message, title = hide_paths(str(err)), "Cannot do that"
        except gr.Error as err:
            message, title = str(err.message), err.title
        except Exception as err:  # noqa: BLE001 - the app must survive any input
            log.exception("unexpected error in %s", fn.__name__)  # a bug: its traceback, once
            message, title = (f"Something went wrong ({type(err).__name__}: {hide_paths(str(err))}). Try another "
                              "input."), "Error"
        if session is not None:
            session.last_error = message
        # The toast draws its text as HTML: the user's text in a message (a file name, a clip id)
        # must show as written.
        raise gr.Error(html.escape(message, quote=False), title=title, print_exception=False) from None

    return wrapper


def _show_notices(response: dict[str, Any]) -> None:
    gr = _gradio()
    for notice in notices_of(response):
        (gr.Warning if notice.level == "warning" else gr.Info)(notice.text)


def _step_plot(view: dict[str, Any], step: int) -> Any:
    """One DDIM step for ``gr.Plot``: the figure's plotly JSON built from plain lists (no Figure
    object, no validation), so an animation frame costs about what a search does."""
    from gradio.components.plot import PlotData

    return PlotData(type="plotly", plot=json.dumps(plots.trajectory_step_spec(view, step)))


def _trajectory_views(session: DemoSession | None) -> tuple[Any, Any, Any]:
    gr = _gradio()
    view = session.trajectory if isinstance(session, DemoSession) else None
    if view is None:
        return plots.empty_figure(), plots.empty_figure(""), gr.Slider(value=0, maximum=1)
    return _step_plot(view, 0), plots.trajectory_heatmap(view), gr.Slider(value=0, maximum=plots.num_steps(view))


def _failed(what: str, session: DemoSession | None) -> str:
    """The status line after a failed search: which query failed, and why (the message stays
    here until the next search; nothing shown belongs to an earlier query)."""
    why = session.last_error if isinstance(session, DemoSession) and session.last_error else None
    return f"**No results for {what}**: " + (md_escape(why) if why else "the search failed.")


def _quoted(caption: Any) -> str:
    text = " ".join(str(caption or "").split())
    text = md_escape(text[:60] + "…" if len(text) > 60 else text)  # the user's text, shown as text
    return f"“{text}”" if text else "an empty caption"


# ----------------------------------------------------------------------------- handlers


class Handlers:
    """The page's event handlers over one ``DemoApp``: plain values in, JSON-able values out;
    a user's mistake becomes a red toast (and an error for API clients).

    The search handlers' parameter names are the API's (``caption, k, steps, top_k, alpha,
    seed, temperature, one_per_sound``); their values are read into one ``RetrievalConfig`` by
    ``DemoApp.parse_settings``.
    """

    def __init__(self, app: DemoApp, server: ServerSettings) -> None:
        self.app = app
        self.server = server

    def _settings(self, k: Any, steps: Any, top_k: Any, alpha: Any, seed: Any, temperature: Any,
                  one_per_sound: Any) -> Any:
        return self.app.parse_api_settings(num_results=k, num_inference_steps=steps, top_k=top_k, alpha=alpha,
                                           seed=seed, temperature=temperature, one_per_sound=one_per_sound)

    def _answer(self, session: DemoSession | None, knobs: tuple[Any, ...],
                search: Callable[[Any, DemoSession], dict[str, Any]]) -> tuple[dict[str, Any], DemoSession]:
        """Run ``search(settings, session)`` with the page's knobs read once; its notices become toasts."""
        session = _session(session)
        response = search(self._settings(*knobs), session)
        _show_notices(response)
        return response, session

    def _with_query_upload(self, session: DemoSession | None, query: Any,
                           search: Callable[[], tuple[dict[str, Any], DemoSession]]) -> tuple[dict[str, Any], DemoSession]:
        """Run ``search``; an uploaded sound it refused is deleted at once, one it searched stays
        while it is the session's sound query (its player shows it) and the one before goes."""
        uploads = self.app.uploads
        try:
            response, session = search()
        except BaseException:
            if not isinstance(session, DemoSession) or query != session.query_upload:  # not the one shown
                uploads.discard_uploads([query])
            raise
        if isinstance(query, str) and query != session.query_upload:
            uploads.discard_uploads([session.query_upload])
            session.query_upload = query
        return response, session

    @_user_errors
    def search_text(self, caption: str, k: float, steps: float, top_k: float, alpha: float, seed: float,
                    temperature: float, one_per_sound: bool,
                    session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
        """Text -> audio: the k best clips for a caption, re-ranked by the diffusion model."""
        return self._answer(session, (k, steps, top_k, alpha, seed, temperature, one_per_sound),
                            lambda settings, s: self.app.searcher.search_text(caption, settings, s))

    @_user_errors
    def search_audio(self, audio: str | None, k: float, steps: float, top_k: float, alpha: float, seed: float,
                     temperature: float, one_per_sound: bool,
                     session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
        """Audio -> text: the k best captions for a sound file or a recording, and the clips that
        sound most like it ("similar")."""
        audio, rate = audio_query(audio)
        return self._with_query_upload(session, audio, lambda: self._answer(
            session, (k, steps, top_k, alpha, seed, temperature, one_per_sound),
            lambda settings, s: self.app.searcher.search_audio(audio, settings, s, sample_rate=rate)))

    @_user_errors
    def search_similar(self, clip_id: str | None, audio: str | None, k: float, steps: float, top_k: float,
                       alpha: float, seed: float, temperature: float, one_per_sound: bool,
                       session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
        """Audio -> audio: the k clips that sound most like a clip of the library (its id: a result's
        clip_id, your own sounds included) or like a sound file; never the clip itself."""
        if clip_id is not None and not isinstance(clip_id, str):
            raise DemoError(f"clip_id must be text (a result's clip_id) or null, got {clip_id!r}")
        query, rate = (clip_id.strip(), None) if clip_id and clip_id.strip() else audio_query(audio)
        return self._with_query_upload(session, query, lambda: self._answer(
            session, (k, steps, top_k, alpha, seed, temperature, one_per_sound),
            lambda settings, s: self.app.searcher.search_similar(query, settings, s, sample_rate=rate)))

    @_user_errors
    def more_like_this(self, clip_id: str | None, k: float, steps: float, top_k: float, alpha: float, seed: float,
                       temperature: float, one_per_sound: bool,
                       session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
        """A result's clip as the sound query: its ranked captions and the clips that sound like it."""
        return self._answer(session, (k, steps, top_k, alpha, seed, temperature, one_per_sound),
                            lambda settings, s: self.app.searcher.search_like(clip_id, settings, s))

    @_user_errors
    def trajectory(self, session: DemoSession | None) -> dict[str, Any]:
        """The last search's DDIM trajectory in this session (x_t per step over the K candidates)."""
        return last_trajectory(session)

    @_user_errors
    def index_uploads(self, files: list[str] | None, session: DemoSession | None,
                      progress: Callable[..., Any]) -> tuple[dict[str, Any], DemoSession]:
        """Index your own sounds (files or zips) for this session only; bad files are listed."""
        session = _session(session)
        progress(0, desc="Indexing your sounds")

        def on_progress(done: int, total: int) -> None:
            progress((done, total), desc="Indexing your sounds", unit="files")

        paths = upload_paths(files)
        try:  # the files are copied into the session's folder: Gradio's copies go at once, used or refused
            report = self.app.user_sounds.index_uploads(paths, session, on_progress)
        finally:
            self.app.uploads.discard_uploads(paths)
        _show_notices(report)
        if report["indexed"]:
            _gradio().Info(f"Indexed {report['indexed']} of your sounds: search for them in the other tabs.")
        return report, session

    @_user_errors
    def clear_uploads(self, session: DemoSession | None) -> tuple[dict[str, Any], DemoSession]:
        """Forget this session's uploaded sounds."""
        session = _session(session)
        return self.app.user_sounds.clear_uploads(session), session

    def forget_session(self, session: Any) -> None:
        if isinstance(session, DemoSession):
            self.app.uploads.discard_uploads([session.query_upload])
            self.app.sessions.forget(session)

    # ------------------------------------------------------------------ views (UI only)

    def show_text_results(self, response: dict[str, Any], session: DemoSession | None) -> list[Any]:
        return [status_line(response), *self.cards(response.get("results", []), hit_markdown, session),
                *_trajectory_views(session)]

    def cards(self, hits: list[dict[str, Any]], markdown: Callable[[dict[str, Any]], str],
              session: DemoSession | None) -> list[Any]:
        """The values of ``MAX_RESULTS`` result cards (``_result_cards``): groups, texts, players and
        clip ids ("More like this" reads them)."""
        # The players get Gradio's cache copies of the clips, never the corpus's own files: a file
        # served in place shows the page its absolute path (where the package is installed).
        gr = _gradio()
        shown = range(min(len(hits), MAX_RESULTS))
        groups = [gr.Group(visible=i in shown) for i in range(MAX_RESULTS)]
        texts = [markdown(hits[i]) if i in shown else "" for i in range(MAX_RESULTS)]
        players = [self.app.audio_file(hits[i]["clip_id"], session) if i in shown else None
                   for i in range(MAX_RESULTS)]
        clips = [hits[i]["clip_id"] if i in shown else "" for i in range(MAX_RESULTS)]
        return [*groups, *texts, *players, *clips]

    @staticmethod
    def no_cards() -> list[Any]:
        hidden = [_gradio().Group(visible=False) for _ in range(MAX_RESULTS)]
        return [*hidden, *[""] * MAX_RESULTS, *[None] * MAX_RESULTS, *[""] * MAX_RESULTS]

    def stale_text_results(self, caption: Any, session: DemoSession | None) -> list[Any]:
        """After a failed text search: clear the cards and the plots of the previous query, and say
        which query failed and why (the results of the last good query must not look like this one's)."""
        return [_failed(_quoted(caption), session), *self.no_cards(), *_trajectory_views(None)]

    def stale_audio_results(self, audio: Any, session: DemoSession | None) -> list[Any]:
        """After a failed audio search: clear the caption table, the similar sounds and the plots,
        and name the query and the reason."""
        name = os.path.basename(str(audio)) if isinstance(audio, (str, os.PathLike)) and audio else "this sound"
        return [_failed(md_escape(name), session), [], "", *self.no_cards(), *_trajectory_views(None)]

    def stale_like_results(self, clip_id: Any, session: DemoSession | None) -> list[Any]:
        """After a failed "More like this": as a failed audio search, naming the clip."""
        return [_failed(md_escape(str(clip_id or "this clip")), session), [], "", *self.no_cards(),
                *_trajectory_views(None)]

    @staticmethod
    def failed_upload(session: DemoSession | None) -> str:
        """The upload status after a refused upload: the reason, until the next upload."""
        why = session.last_error if isinstance(session, DemoSession) and session.last_error else None
        return "**Nothing indexed**: " + (md_escape(why) if why else "the upload failed.")

    def show_audio_results(self, response: dict[str, Any], session: DemoSession | None) -> list[Any]:
        similar = response.get("similar", [])
        return [status_line(response), hits_table(response), similar_status(response, "similar"),
                *self.cards(similar, similar_markdown, session), *_trajectory_views(session)]

    def show_like_results(self, response: dict[str, Any], session: DemoSession | None) -> list[Any]:
        """"More like this": the audio tab, its query player holding the clip, its results."""
        clip = self.app.audio_file(response["query_clip"], session)
        return [_gradio().Tabs(selected="audio"), clip, *self.show_audio_results(response, session)]

    def show_upload(self, report: dict[str, Any], session: DemoSession | None) -> list[Any]:
        if "indexed" in report:
            status = upload_status(report)
        else:
            status = f"Removed {report.get('removed', 0)} of your clips. Searching now: {report['corpus']}."
        return [status, skipped_table(report), self.corpus_line(session)]

    def corpus_line(self, session: DemoSession | None) -> str:
        note = getattr(self.app.model, "checkpoint_extra", {}).get("trained_on", "")
        return "Searching: " + self.app.corpus.summary(session) + (f" · checkpoint: {note}" if note else "")

    @staticmethod
    def draw_step(session: DemoSession | None, step: float) -> Any:
        view = session.trajectory if isinstance(session, DemoSession) else None
        if view is None:
            return plots.empty_figure()
        return _step_plot(view, int(step))

    def play(self, session: DemoSession | None, start: float = 0):
        """Stream one figure per DDIM step, x_T -> x_0 (a generator: the plot updates live)."""
        view = session.trajectory if isinstance(session, DemoSession) else None
        if view is None:
            yield plots.empty_figure(), 0
            return
        pause = frame_pause(len(view["x_t"]), self.server.animation_seconds, self.server.frame_seconds)
        for step in iter_steps(view, int(start or 0)):
            if session.trajectory is not view:
                return  # a newer search in this session took over the plot
            yield _step_plot(view, step), step
            time.sleep(pause)

    def play_from_start(self, session: DemoSession | None):
        yield from self.play(session, 0)


# ----------------------------------------------------------------------------- controls


def named(component: Any) -> Any:
    """``component`` whose value reaches the handler as it was sent, unchecked: the handler reads
    it by name (``DemoApp.parse_api_settings``, the library's words). Gradio's own check of a
    slider or a number box says neither which setting was wrong ("Value 0 is less than minimum
    value 1.") nor survives a string, null or NaN (a traceback in the log). The instance's
    method is replaced (a subclass of a Gradio component would make Gradio write a stub file
    beside this one)."""
    component.preprocess = lambda payload: payload
    return component


class _NamedFileModel:
    """A file input's data model (Gradio's ``FileData`` / ``ListFiles``) whose refusal of a value
    that is not an uploaded file names the parameter, instead of a pydantic traceback in the log
    and a message that says nothing ("The upstream Gradio app has raised an exception")."""

    def __init__(self, model: Any, name: str, what: str) -> None:
        self._model, self._name, self._what = model, name, what

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._model, attr)

    def model_validate(self, value: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            return self._model.model_validate(value, **kwargs)
        except ValidationError:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            log.warning("user error: %s = %s", self._name, shown)
            message = f"{self._name} must be {self._what} (gradio_client: handle_file(path)), got {hide_paths(shown)}"
            raise _gradio().Error(html.escape(message, quote=False), title="Cannot do that",
                                  print_exception=False) from None


def named_files(component: Any, name: str, what: str) -> Any:
    """``component`` (``gr.Audio``, ``gr.File``) with a data model that names it (``_NamedFileModel``)."""
    component.data_model = _NamedFileModel(component.data_model, name, what)
    return component


def knob_control(name: str, value: Any, elem_id: str, *, high: float | None = None, info: str | None = None) -> Any:
    """A slider (or, for the seed, a number box; for a switch, a checkbox) for one
    ``RetrievalConfig`` field, its label, notation and bounds taken from the field's metadata;
    ``high`` narrows the upper bound."""
    gr = _gradio()
    meta = KNOBS[name].metadata
    label, info = meta["label"], info or meta["info"]
    if KNOBS[name].type == "bool":
        return named(gr.Checkbox(value=value, label=label, info=info, elem_id=elem_id))
    if name == "seed":
        return named(gr.Number(value=value, precision=0, minimum=meta["low"], label=label, info=info,
                               elem_id=elem_id))
    integer = KNOBS[name].type == "int"
    top = high if high is not None else meta["high"]
    slider = gr.Slider(meta["low"], top, value=value, step=1 if integer else meta["step"], label=label, info=info,
                       elem_id=elem_id)
    return named(slider)


# ----------------------------------------------------------------------------- layout

INTRO = """
## DiffATR: search sounds with words, or words with sounds
Describe a sound, or give one: a diffusion model re-ranks the closest clips, and you watch it work.
"""

# What the animation shows, in plain words (above the plot); the notation is in HOW_IT_WORKS.
TRAJECTORY_HELP = (
    "**The diffusion at work:** one bar per candidate, in the final ranking's order, showing how strongly the "
    "model picks it, from random noise (first step) to its answer (last). Orange bars are your results.")

HOW_IT_WORKS = """
**Two stages.** A dual encoder maps captions and sounds to one space and ranks every clip by
cosine similarity to the query (a typed query is first nudged toward the three captions the
model learned that are nearest to it, and toward their sounds, so your own wording finds what
its captions call otherwise). A small diffusion model then takes the top **K** candidates
(*Candidates re-ranked*): it starts from noise **x_T** and, in **S** DDIM steps (*Diffusion
steps*), generates a distribution over them, **x_0**. The final score adds the two:
`fused = cosine + α · softmax(x̂0 / τ)`, with α the *Weight of the diffusion* and τ the
*Fusion temperature*.

**The bars** plot softmax(x̂0 × CE scale), the sharpness the model was trained to generate
(step 0 plots the start noise as a distribution, softmax(x_T)), one per candidate in the final
ranking's order. Orange bars are the final top results, in bold, with the diffusion's own rank
(Gen #). When the two disagree, the figure says so in words: at the default τ = 1 the diffusion
term is small beside the cosine, so the final ranking can keep the cosine's choice. **The
heatmap** below shows the whole path at once: candidates down, steps across (x_T on the left,
x_0 on the right), the final top results in bold.

Press **Play** to run it again, or move the slider to any step (nothing is recomputed). The
method and its measured quality are in the repository's README and docs/method.md.
"""

CSS = """
#trajectory-plot, #trajectory-heatmap {min-height: 420px;}
.result-card {padding: 4px 8px;}
.more-like-this {max-width: 11em;}
"""


def _theme() -> Any:
    """System fonts only: the page must render offline (no web-font downloads)."""
    gr = _gradio()
    return gr.themes.Default(font=[gr.themes.Font("system-ui"), "sans-serif"],
                             font_mono=[gr.themes.Font("ui-monospace"), "monospace"])


def _settings_row(app: DemoApp) -> list[Any]:
    """The search settings, in the order of the search handlers' parameters."""
    gr = _gradio()
    d, t = app.defaults, app.num_train_timesteps
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
        return [
            knob_control("num_results", d.num_results, "k-slider", high=MAX_RESULTS),
            knob_control("num_inference_steps", d.num_inference_steps, "steps-slider", high=t,
                         info=f"{KNOBS['num_inference_steps'].metadata['info']} (T = {t})"),
            knob_control("top_k", d.top_k, "top-k-slider", high=TOP_K_MAX),
            knob_control("alpha", d.alpha, "alpha-slider"),
            knob_control("seed", d.seed, "seed-box", high=SEED_MAX),
            knob_control("temperature", d.temperature, "temperature-slider",
                         info=f"{KNOBS['temperature'].metadata['info']} "
                              f"(here 1 / CE scale = {1 / app.model.config.diffusion.ce_scale:g})"),
            knob_control("one_per_sound", d.one_per_sound, "one-per-sound-box"),
        ]


def _result_cards(prefix: str) -> dict[str, list[Any]]:
    """``MAX_RESULTS`` hidden result cards: a text, a player, a "More like this" button and the
    clip's id (hidden; the button's input), as ``Handlers.cards`` fills them."""
    gr = _gradio()
    cards: dict[str, list[Any]] = {"groups": [], "cards": [], "players": [], "clips": [], "like": []}
    for i in range(MAX_RESULTS):
        with gr.Group(visible=False, elem_classes=["result-card"]) as group:
            cards["cards"].append(gr.Markdown(elem_id=f"{prefix}-card-{i}"))
            with gr.Row(equal_height=True):
                cards["players"].append(gr.Audio(interactive=False, show_label=False, elem_id=f"{prefix}-audio-{i}",
                                                 scale=4))
                cards["like"].append(gr.Button("More like this", size="sm", scale=1, min_width=100,
                                               elem_id=f"{prefix}-like-{i}", elem_classes=["more-like-this"]))
            cards["clips"].append(gr.Textbox(visible=False, elem_id=f"{prefix}-clip-{i}"))
        cards["groups"].append(group)
    return cards


def _text_tab(app: DemoApp) -> dict[str, Any]:
    gr = _gradio()
    with gr.Tab("Text → audio", id="text"):
        with gr.Row():
            caption = named(gr.Textbox(label="Describe a sound", placeholder=f"e.g. {PLACEHOLDER_QUERY}", scale=5,
                                       max_lines=3, elem_id="caption-box"))
            button = gr.Button("Search", variant="primary", scale=1, elem_id="text-search")
        gr.Examples(app.corpus.example_queries(), inputs=[caption], label="Try", elem_id="text-examples")
        status = gr.Markdown(elem_id="text-status")
        cards = _result_cards("result")
    return {"caption": caption, "button": button, "status": status, **cards}


def _audio_tab(app: DemoApp) -> dict[str, Any]:
    gr = _gradio()
    with gr.Tab("Audio → text & similar sounds", id="audio"):
        audio = named_files(gr.Audio(sources=["upload", "microphone"], type="filepath",
                                     label="A sound to search with (upload or record)", elem_id="audio-query"),
                            "audio", "an uploaded sound file or null")
        button = gr.Button("Search", variant="primary", elem_id="audio-search")
        gr.Examples([[p] for p in app.corpus.example_audio()], inputs=[audio], label="Try a corpus clip")
        status = gr.Markdown(elem_id="audio-status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                table = gr.Dataframe(
                    headers=["#", "caption", "clip", "fused", "cosine", "diffusion", "moved"],
                    label="Ranked captions (fused = cosine + α · diffusion; moved = places gained)",
                    interactive=False, elem_id="caption-table", wrap=True,
                    column_widths=["6%", "27%", "10%", "12%", "14%", "18%", "13%"])
            with gr.Column(scale=1):
                similar_status = gr.Markdown(elem_id="similar-status")
                similar = _result_cards("similar")
        # The search_similar endpoint's clip id (API clients; the page uses the cards' buttons).
        like_clip = named(gr.Textbox(visible=False, elem_id="similar-query-clip"))
        like_button = gr.Button(visible=False, elem_id="similar-search")
    return {"audio": audio, "button": button, "status": status, "table": table, "similar_status": similar_status,
            "similar": similar, "like_clip": like_clip, "like_button": like_button}


def _uploads_tab(app: DemoApp) -> dict[str, Any]:
    gr = _gradio()
    with gr.Tab("Your sounds", id="uploads"):
        gr.Markdown("Add your own sounds: several audio files, or a `.zip` of them (a `NAME.txt` beside "
                    "`NAME.wav` gives its captions, one per line). They are searchable **in this "
                    "session only**; the shipped corpus is not changed. Limits: "
                    + md_escape(app.quotas.describe()) + ".")
        files = named_files(gr.File(file_count="multiple", label="Audio files or a .zip", elem_id="upload-files"),
                            "files", "a list of uploaded files")
        with gr.Row():
            index_button = gr.Button("Index my sounds", variant="primary", elem_id="index-button")
            clear_button = gr.Button("Forget my sounds", elem_id="clear-button")
        status = gr.Markdown(elem_id="upload-status")
        skipped = gr.Dataframe(headers=["file", "why it was skipped"], label="Files that could not be used",
                               interactive=False, wrap=True, column_widths=["30%", "70%"], elem_id="skipped-table")
        with gr.Accordion("Upload report (JSON, as the API returns it)", open=False):
            report = gr.JSON(label="report")
    return {"files": files, "index": index_button, "clear": clear_button, "status": status, "skipped": skipped,
            "report": report}


def _trajectory_column() -> dict[str, Any]:
    gr = _gradio()
    gr.Markdown(TRAJECTORY_HELP, elem_id="trajectory-help")
    step_plot = gr.Plot(plots.empty_figure(), show_label=False, elem_id="trajectory-plot")
    with gr.Row():
        play = gr.Button("▶ Play", elem_id="play-button", scale=1, min_width=80)
        pause = gr.Button("❚❚ Pause", elem_id="pause-button", scale=1, min_width=80)
        step = gr.Slider(0, 1, value=0, step=1, label="DDIM step (0 = x_T noise … last = x_0)",
                         elem_id="step-slider", scale=4)
    with gr.Accordion("How it works", open=False, elem_id="how-it-works"):
        gr.Markdown(HOW_IT_WORKS)
    heatmap = gr.Plot(plots.empty_figure(""), label="Whole trajectory", elem_id="trajectory-heatmap")
    return {"plot": step_plot, "play": play, "pause": pause, "step": step, "heatmap": heatmap}


def build_demo(app: DemoApp, server: ServerSettings | None = None) -> Any:
    """The page over a loaded (and started) ``DemoApp``: components and events, not launched.

    Args:
        app: the loaded app (``DemoApp.load().start()``).
        server: the workers and pace (default ``ServerSettings.from_env()``).

    Returns:
        The ``gr.Blocks``, queued.
    """
    gr = _gradio()
    server = server or ServerSettings.from_env()
    handlers = Handlers(app, server)
    quotas = app.quotas
    # Gradio sweeps its cache every cache_sweep_s: uploads no search used within cache_ttl_s go
    # (and the players' copies of clips, made again when shown).
    with gr.Blocks(title="DiffATR: audio-text retrieval with diffusion",
                   delete_cache=(int(quotas.cache_sweep_s), int(quotas.cache_ttl_s))) as demo:
        # Every page (and API client) gets its own DemoSession on first use, so that even a first
        # failed search can leave its message for the status line. A session idle for the
        # time-to-live is deleted, and with it its uploaded files. The callback is a plain
        # function: Gradio deep-copies the page config (which holds it) on every page load, and a
        # bound method would copy the handlers' model and index with it (1-2 s a page load).
        page = {"session": gr.State(_new_session, time_to_live=quotas.session_ttl_s,
                                    delete_callback=lambda session: handlers.forget_session(session))}
        # Above the fold at 1400 x 900 (the browser test checks it): a two-line header, the
        # settings collapsed beside it, then the search and its results next to the animation.
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=400):
                gr.Markdown(INTRO, elem_id="intro")
                page["corpus_line"] = gr.Markdown(handlers.corpus_line(None), elem_id="corpus-line")
            with gr.Column(scale=2, min_width=300):
                page["knobs"] = _settings_row(app)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5), gr.Tabs(elem_id="tabs") as page["tabs"]:
                page["text"], page["audio"], page["uploads"] = _text_tab(app), _audio_tab(app), _uploads_tab(app)
            with gr.Column(scale=6):
                page["trajectory"] = _trajectory_column()
        with gr.Accordion("Search response and trajectory (JSON, as the API returns them)", open=False):
            page["response"] = gr.JSON(label="response")
            page["trajectory_button"] = gr.Button("Show the trajectory data", size="sm")
            page["trajectory_json"] = gr.JSON(label="trajectory")
        _wire_searches(handlers, page, server)
        _wire_similar(handlers, page, server)
        _wire_player_and_uploads(handlers, page, server)
    status_rate = server.queue_status_seconds
    return demo.queue(status_update_rate=status_rate if status_rate == "auto" else float(status_rate))


def _wire_searches(handlers: Handlers, page: dict[str, Any], server: ServerSettings) -> None:
    """The search events: search, then show, then animate; a failed search clears the old results."""
    gr = _gradio()
    text, audio, traj, session = page["text"], page["audio"], page["trajectory"], page["session"]
    traj_outputs = [traj["plot"], traj["heatmap"], traj["step"]]
    animation = [traj["plot"], traj["step"]]
    views = dict(concurrency_limit=server.view_workers, concurrency_id="views", api_visibility="private",
                 show_progress="hidden")
    animated = dict(concurrency_limit=server.animations, concurrency_id="animation", api_visibility="private",
                    show_progress="hidden")
    text_cards = [text["status"], *_card_outputs(text), *traj_outputs]
    text_search = gr.on([text["button"].click, text["caption"].submit], handlers.search_text,
                        inputs=[text["caption"], *page["knobs"], session], outputs=[page["response"], session],
                        api_name="search_text", concurrency_limit=server.search_workers, concurrency_id="search_text")
    text_shown = text_search.success(handlers.show_text_results, [page["response"], session], text_cards, **views)
    page["played"] = [text_shown.success(handlers.play_from_start, [session], animation, **animated)]
    text_search.failure(handlers.stale_text_results, [text["caption"], session], text_cards, **views)

    audio_outputs = _audio_outputs(page)
    audio_search = audio["button"].click(handlers.search_audio, inputs=[audio["audio"], *page["knobs"], session],
                                         outputs=[page["response"], session], api_name="search_audio",
                                         concurrency_limit=server.audio_search_workers, concurrency_id="search_audio")
    audio_shown = audio_search.success(handlers.show_audio_results, [page["response"], session], audio_outputs,
                                       **views)
    page["played"].append(audio_shown.success(handlers.play_from_start, [session], animation, **animated))
    audio_search.failure(handlers.stale_audio_results, [audio["audio"], session], audio_outputs, **views)


def _card_outputs(cards: dict[str, list[Any]]) -> list[Any]:
    return [*cards["groups"], *cards["cards"], *cards["players"], *cards["clips"]]


def _audio_outputs(page: dict[str, Any]) -> list[Any]:
    """What an audio search shows: status, captions, similar sounds, the trajectory's plots."""
    audio, traj = page["audio"], page["trajectory"]
    return [audio["status"], audio["table"], audio["similar_status"], *_card_outputs(audio["similar"]),
            traj["plot"], traj["heatmap"], traj["step"]]


def _wire_similar(handlers: Handlers, page: dict[str, Any], server: ServerSettings) -> None:
    """"More like this" on every result card (the clip becomes the audio tab's query: its captions
    and the sounds like it), and the search_similar endpoint."""
    audio, session, traj = page["audio"], page["session"], page["trajectory"]
    searching = dict(concurrency_limit=server.audio_search_workers, concurrency_id="search_audio")
    views = dict(concurrency_limit=server.view_workers, concurrency_id="views", api_visibility="private",
                 show_progress="hidden")
    animated = dict(concurrency_limit=server.animations, concurrency_id="animation", api_visibility="private",
                    show_progress="hidden")
    shown_outputs = [page["tabs"], audio["audio"], *_audio_outputs(page)]
    for cards in (page["text"], audio["similar"]):
        for clip, button in zip(cards["clips"], cards["like"]):
            liked = button.click(handlers.more_like_this, inputs=[clip, *page["knobs"], session],
                                 outputs=[page["response"], session], api_visibility="private", **searching)
            shown = liked.success(handlers.show_like_results, [page["response"], session], shown_outputs, **views)
            page["played"].append(shown.success(handlers.play_from_start, [session], [traj["plot"], traj["step"]],
                                                **animated))
            liked.failure(handlers.stale_like_results, [clip, session], _audio_outputs(page), **views)
    audio["like_button"].click(handlers.search_similar, inputs=[audio["like_clip"], audio["audio"], *page["knobs"],
                                                                session],
                               outputs=[page["response"], session], api_name="search_similar", **searching)


def _wire_player_and_uploads(handlers: Handlers, page: dict[str, Any], server: ServerSettings) -> None:
    """Play / pause / the step slider, the trajectory endpoint, and the upload events."""
    gr = _gradio()
    traj, uploads, session = page["trajectory"], page["uploads"], page["session"]
    animation = [traj["plot"], traj["step"]]
    views = dict(concurrency_limit=server.view_workers, concurrency_id="views")
    private = dict(api_visibility="private", show_progress="hidden")
    replay = traj["play"].click(handlers.play, [session, traj["step"]], animation, concurrency_limit=server.animations,
                                concurrency_id="animation", **private)
    traj["pause"].click(None, cancels=[replay, *page["played"]])
    # Only the user's own moves redraw (programmatic updates from Play do not fire these).
    for event in (traj["step"].release, traj["step"].input):
        event(handlers.draw_step, [session, traj["step"]], traj["plot"], concurrency_limit=None,
              trigger_mode="always_last", **private)
    page["trajectory_button"].click(handlers.trajectory, [session], page["trajectory_json"], api_name="trajectory",
                                    **views)

    def index_uploads(files: list[str] | None, session: DemoSession | None,
                      progress: Any = gr.Progress()) -> tuple[dict[str, Any], DemoSession]:  # noqa: B008
        """Index your own sounds (files or zips) for this session only; bad files are listed."""
        return handlers.index_uploads(files, session, progress)

    # Uploads of different sessions run side by side (up to upload_workers); one session's
    # uploads run one after the other (UserSounds.index_uploads locks the session).
    shown = [uploads["status"], uploads["skipped"], page["corpus_line"]]
    indexed = uploads["index"].click(index_uploads, [uploads["files"], session], [uploads["report"], session],
                                     api_name="index_uploads", concurrency_limit=server.upload_workers,
                                     concurrency_id="uploads")
    indexed.success(handlers.show_upload, [uploads["report"], session], shown, **views, **private)
    indexed.failure(handlers.failed_upload, [session], [uploads["status"]], **views, **private)
    cleared = uploads["clear"].click(handlers.clear_uploads, [session], [uploads["report"], session],
                                     api_name="clear_uploads", concurrency_limit=None)
    cleared.success(handlers.show_upload, [uploads["report"], session], shown, **views, **private)


# ----------------------------------------------------------------------------- start


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(0)  # a normal exit, so that atexit deletes this run's uploads (a Space stops with SIGTERM)


def server_environment() -> None:
    """Set ``OFFLINE_ENVIRONMENT`` and ``QUEUE_ENVIRONMENT`` where the environment has no value of
    its own (before gradio builds its queue, which reads them)."""
    for name, value in {**OFFLINE_ENVIRONMENT, **QUEUE_ENVIRONMENT}.items():
        os.environ.setdefault(name, value)


def prepare(server: ServerSettings | None = None) -> tuple[Any, DemoApp, ServerSettings]:
    """Everything ``main`` does before serving: the offline and queue environment
    (``server_environment``), torch's threads, the app loaded and started (the upload folder
    taken up, one warm-up query), the page built.

    Returns:
        (the queued ``gr.Blocks``, the app, the server settings).
    """
    server_environment()
    server = server or ServerSettings.from_env()
    import torch

    torch.set_num_threads(server.torch_threads)
    app = DemoApp.load().start()
    # Gradio's upload cache goes in the run's folder: charged to the quotas (UploadGuard),
    # emptied at exit with it, an earlier run's deleted at start.
    app.uploads.cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(app.uploads.cache_dir)
    log.info("upload quotas: %s", app.quotas.describe())
    return build_demo(app, server), app, server


def main() -> None:
    """Serve the demo (``python app.py``, or the ``diffatr-demo`` command)."""
    from diffatr.serving import start_heap_trimmer

    demo, app, server = prepare()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start_heap_trimmer(server.heap_trim_seconds)
    from starlette.middleware import Middleware

    from diffatr.serving import UploadGuard

    # An upload is charged to the quotas before it is received (UploadGuard); a file larger than
    # upload_mb is refused by Gradio at once.
    # Gradio probes its own page once it listens and refuses to start if one probe takes over 3 s,
    # which a loaded 2-core machine reaches (2.6 s measured): the probe is skipped where it can be.
    probe = {"_frontend": False} if "_frontend" in inspect.signature(demo.launch).parameters else {}
    demo.launch(theme=_theme(), css=CSS, max_file_size=int(app.quotas.upload_mb * 1e6),
                app_kwargs={"middleware": [Middleware(UploadGuard, store=app.uploads, forwarded=server.forwarded())]},
                **probe)


def __getattr__(name: str) -> Any:
    """``demo``, built on first access: Gradio's reload mode (``gradio app.py``) looks for it."""
    if name == "demo":
        demo = prepare()[0]
        globals()["demo"] = demo
        return demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
