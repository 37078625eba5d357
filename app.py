"""The DiffATR demo: ``python app.py`` (Hugging Face Spaces runs this file too).

The app lives in ``diffatr.webapp`` so that an installed package serves it as well
(``diffatr-demo``); this file only starts it. Importing it loads nothing.
"""

from typing import Any

from diffatr import webapp


def __getattr__(name: str) -> Any:
    """``demo``, built on first access: Gradio's reload mode (``gradio app.py``) looks for it."""
    if name == "demo":
        return webapp.demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    webapp.main()
