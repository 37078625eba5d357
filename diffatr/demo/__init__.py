"""The demo's logic as plain functions of plain types: no Gradio here, so it is tested directly.

``DemoApp.load()`` loads the checkpoint, the demo corpus and both encoders once; ``start()``
takes up the upload folder and warms up.
Each browser session owns a ``DemoSession`` (its own uploaded clips and its last trajectory);
the shipped index is never changed. Handlers take strings, paths, numbers and waveforms with
their ``sample_rate`` (Gradio's own values are converted in ``diffatr.webapp_io``) and return
JSON-able dicts. A user mistake raises ``DemoError`` with a message written for the user;
softer problems (a caption or a recording that was cut) come back as ``notices``.
``diffatr.webapp`` turns all of this into components; ``diffatr.plots`` draws.

Modules: ``app`` (DemoApp, the wiring), ``settings`` (a search's RetrievalConfig from form
values, and the page's limits), ``search`` (text and audio queries, sounds like a sound or a
clip), ``trajectory`` (a
session's last trajectory view and the animation's pace), ``user_sounds`` and
``unpack`` (uploads), ``session`` (sessions, their engines and locks), ``corpus`` (the shipped
corpus as the page names it), ``messages`` (errors and notices), ``formatting`` (page text).
"""

from diffatr.demo.app import DemoApp
from diffatr.demo.corpus import (
    APP_INDEX_ENV,
    EXAMPLE_AUDIO,
    EXAMPLE_QUERIES,
    PLACEHOLDER_QUERY,
    USER_PREFIX,
    DemoCorpus,
    demo_index_dir,
)
from diffatr.demo.formatting import (
    hit_markdown,
    hits_table,
    md_escape,
    notices_of,
    similar_markdown,
    similar_status,
    skipped_table,
    status_line,
    upload_status,
    variants_note,
)
from diffatr.demo.messages import DemoError, Notice, hide_paths
from diffatr.demo.search import Searcher
from diffatr.demo.session import DemoSession
from diffatr.demo.settings import (
    AUDIO_MAX_SECONDS,
    MAX_QUERY_CHARS,
    MAX_RESULTS,
    MIN_QUERY_SECONDS,
    PAGE_LIMITS,
    SEED_MAX,
    TOP_K_MAX,
    page_defaults,
    read_settings,
)
from diffatr.demo.trajectory import frame_pause, iter_steps, last_trajectory
from diffatr.demo.user_sounds import UserSounds

__all__ = [
    "APP_INDEX_ENV",
    "AUDIO_MAX_SECONDS",
    "EXAMPLE_AUDIO",
    "EXAMPLE_QUERIES",
    "MAX_QUERY_CHARS",
    "MAX_RESULTS",
    "MIN_QUERY_SECONDS",
    "PAGE_LIMITS",
    "PLACEHOLDER_QUERY",
    "SEED_MAX",
    "TOP_K_MAX",
    "USER_PREFIX",
    "DemoApp",
    "DemoCorpus",
    "DemoError",
    "DemoSession",
    "Notice",
    "Searcher",
    "UserSounds",
    "demo_index_dir",
    "hide_paths",
    "hit_markdown",
    "hits_table",
    "frame_pause",
    "iter_steps",
    "last_trajectory",
    "md_escape",
    "notices_of",
    "page_defaults",
    "read_settings",
    "similar_markdown",
    "similar_status",
    "skipped_table",
    "status_line",
    "upload_status",
    "variants_note",
]
