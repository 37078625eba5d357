"""The DiffATR demo: ``python app.py`` (Hugging Face Spaces runs this file too).

The app lives in ``diffatr.webapp`` so that an installed package serves it as well
(``diffatr-demo``); this file only starts it.
"""

from diffatr.webapp import demo, main  # noqa: F401  (`demo`: Gradio's reload mode looks for it here)

if __name__ == "__main__":
    main()
