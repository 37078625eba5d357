"""The knobs of one search (``Settings``) and the demo's limits, validated from form values.

Owns the bounds the page and the API enforce (the knobs' own bounds are the library's,
``diffatr.config.KNOB_BOUNDS``, written once). It must not run searches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from diffatr.config import DEFAULT_RESULTS, KNOB_BOUNDS, RetrievalConfig
from diffatr.demo.messages import DemoError

MAX_RESULTS = DEFAULT_RESULTS  # result slots on the page (and the cap on k)
TOP_K_MAX = 64  # K: candidates re-ranked per query (the engine clamps it to the corpus)
ALPHA_MAX = KNOB_BOUNDS["alpha"][1]
TEMPERATURE_MIN, TEMPERATURE_MAX = KNOB_BOUNDS["temperature"]  # the fusion's softmax temperature
SEED_MAX = 2**31 - 1  # the browser's number box holds 32-bit integers; the library allows more
MAX_QUERY_CHARS = 500  # longer captions are cut (the text encoder reads 128 tokens anyway)
# Audio queries and uploads are cut here (the library's max_seconds policy, with a notice):
# on the 2-core CPU this keeps an audio query or one upload at about a second.
AUDIO_MAX_SECONDS = 30.0
MIN_QUERY_SECONDS = 0.05  # shorter audio queries are refused (the shortest corpus clip is 0.098 s)


def _number(value: Any, name: str, default: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return float(default)
    if isinstance(value, bool):
        raise DemoError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DemoError(f"{name} must be a finite number, got {value!r}")
    return number


def _integer(value: Any, name: str, default: int, low: int, high: int) -> int:
    number = _number(value, name, default)
    if number != int(number):
        raise DemoError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise DemoError(f"{name} must be between {low} and {high}, got {int(number)}")
    return int(number)


@dataclass(frozen=True)
class Settings:
    """The knobs of one search (see ``diffatr.retrieval.engine.rerank``).

    Attributes:
        k: results shown (1..MAX_RESULTS).
        num_inference_steps: DDIM steps S (1..T).
        top_k: K, candidates re-ranked by the diffusion (clamped to the corpus size).
        alpha: weight of the diffusion score in fused = cosine + alpha * softmax(x0 / temperature).
        seed: seed of the start noise x_T (same seed, same trajectory).
        temperature: the fusion's softmax temperature (the paper: 1; 1 / CE scale = the
            sharpness the denoisers were trained at).
    """

    k: int = DEFAULT_RESULTS
    num_inference_steps: int = RetrievalConfig.num_inference_steps
    top_k: int = RetrievalConfig.top_k
    alpha: float = RetrievalConfig.alpha
    seed: int = RetrievalConfig.seed
    temperature: float = RetrievalConfig.temperature

    @classmethod
    def parse(cls, *, k: Any = None, num_inference_steps: Any = None, top_k: Any = None,
              alpha: Any = None, seed: Any = None, temperature: Any = None, defaults: Settings | None = None,
              num_train_timesteps: int = 50) -> Settings:
        """Validate values from a form or an API call (None = the default).

        Raises:
            DemoError: a value that is not a number or is out of range.
        """
        d = defaults or cls()
        alpha_value = _number(alpha, "alpha", d.alpha)
        if not 0.0 <= alpha_value <= ALPHA_MAX:
            raise DemoError(f"alpha must be between 0 and {ALPHA_MAX:g}, got {alpha_value:g}")
        temperature_value = _number(temperature, "temperature", d.temperature)
        if not TEMPERATURE_MIN <= temperature_value <= TEMPERATURE_MAX:
            raise DemoError(f"temperature must be between {TEMPERATURE_MIN:g} and {TEMPERATURE_MAX:g}, "
                            f"got {temperature_value:g}")
        return cls(
            k=_integer(k, "k (results shown)", d.k, 1, MAX_RESULTS),
            num_inference_steps=_integer(num_inference_steps, "steps (DDIM steps)", d.num_inference_steps, 1,
                                         num_train_timesteps),
            top_k=_integer(top_k, "top_k (K, candidates re-ranked)", d.top_k, 1, TOP_K_MAX),
            alpha=alpha_value,
            seed=_integer(seed, "seed", d.seed, 0, SEED_MAX),
            temperature=temperature_value,
        )

    @classmethod
    def for_model(cls, retrieval: RetrievalConfig, num_train_timesteps: int) -> Settings:
        """A checkpoint's retrieval defaults, within the demo's bounds (the page's first values)."""
        return cls(k=DEFAULT_RESULTS, num_inference_steps=min(retrieval.num_inference_steps, num_train_timesteps),
                   top_k=min(retrieval.top_k, TOP_K_MAX), alpha=float(retrieval.alpha),
                   seed=int(retrieval.seed), temperature=float(retrieval.temperature))

    def knobs(self) -> dict[str, Any]:
        """The engine's keyword arguments."""
        return {"top_k": self.top_k, "num_inference_steps": self.num_inference_steps,
                "alpha": self.alpha, "seed": self.seed, "temperature": self.temperature}
