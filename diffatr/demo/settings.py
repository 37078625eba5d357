"""The settings of one search, read from form values, and the demo's own limits.

A search's settings are the library's ``RetrievalConfig``, built once here from the page's
values on the checkpoint's defaults (``ModelConfig.with_retrieval``): its bounds and its error
wording are the library's (``diffatr.config.check_knob``). The page only narrows three of them
(``PAGE_LIMITS``) and turns one switch on (``PAGE_SWITCHES``). It must not run searches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffatr.config import ConfigError, ModelConfig, RetrievalConfig, check_knob, knob_fields
from diffatr.demo.messages import DemoError

MAX_RESULTS = 10  # result slots on the page
TOP_K_MAX = 64  # K: the re-rank's cost grows with K, and the page is shared
SEED_MAX = 2**31 - 1  # the browser's number box holds 32-bit integers; the library allows more
# Settings the page allows less of than the library does, and why (said in the message).
PAGE_LIMITS = {"num_results": (MAX_RESULTS, "the result slots on the page"),
               "top_k": (TOP_K_MAX, "the demo's limit"), "seed": (SEED_MAX, "the browser's number box")}
# Switches the page turns on whatever the checkpoint says: a page of ten results shows ten
# different recordings, each with its number of hidden variants (the user can turn it off).
PAGE_SWITCHES = {"one_per_sound": True}
MAX_QUERY_CHARS = 500  # longer captions are cut (the text encoder reads 128 tokens anyway)
# Audio queries and uploads are cut here (the library's max_seconds policy, with a notice):
# on the 2-core CPU this keeps an audio query or one upload at about a second.
AUDIO_MAX_SECONDS = 30.0
MIN_QUERY_SECONDS = 0.05  # shorter audio queries are refused (the shortest corpus clip is 0.098 s)

_FIELDS = {f.name: f for f in knob_fields()}


def page_defaults(model_config: ModelConfig) -> RetrievalConfig:
    """A checkpoint's retrieval settings within the page's limits, with the page's switches
    (the page's first values)."""
    defaults = model_config.retrieval
    return model_config.with_retrieval(**{name: min(getattr(defaults, name), high)
                                          for name, (high, _) in PAGE_LIMITS.items()}, **PAGE_SWITCHES)


def read_settings(model_config: ModelConfig, values: Mapping[str, Any], *, strict: bool = False) -> RetrievalConfig:
    """The ``RetrievalConfig`` of one search: the page's values (``RetrievalConfig`` field names;
    None or "" = the page's default) on the checkpoint's defaults.

    Args:
        model_config: the checkpoint's config (its ``retrieval`` are the defaults).
        values: the settings given.
        strict: the values of an API call, taken as JSON sends them: a number for a numeric
            setting and true / false for a switch; a string, null, NaN or infinity is refused by
            the setting's name (the page's own controls never send those).

    Raises:
        DemoError: an unknown setting, a value that is not a number, or one out of range (the
            library's message).
    """
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise DemoError(f"unknown settings {unknown}; known: {', '.join(_FIELDS)}")
    if strict:
        try:
            for name, value in values.items():
                high, why = PAGE_LIMITS.get(name, (None, ""))
                check_knob(name, value, high=high, why=why)
        except ConfigError as err:
            raise DemoError(str(err)) from None
    overrides = {name: _form_value(value) for name, value in values.items()}
    defaults = page_defaults(model_config)
    overrides = {name: value for name, value in overrides.items() if value is not None}
    try:
        for name, value in overrides.items():
            if name in PAGE_LIMITS:
                check_knob(name, value, high=PAGE_LIMITS[name][0], why=PAGE_LIMITS[name][1])
        return model_config.with_retrieval(**{**_as_dict(defaults), **overrides})
    except ConfigError as err:
        raise DemoError(str(err)) from None


def _form_value(value: Any) -> Any:
    """A form's value as the library takes it: numbers from text, blanks as None (the check of
    the value itself is the library's)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # a fusion rule's name, or a bad number the library names
    return value


def _as_dict(config: RetrievalConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in _FIELDS}
