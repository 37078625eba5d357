"""What the demo says to its user: ``DemoError`` (a request it cannot answer), ``Notice`` (a
softer message that does not stop the request), and server paths hidden from both.

Owns the wording helpers shared by searches and uploads; it must not look at requests itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffatr.errors import DiffatrError


class DemoError(DiffatrError):
    """A request the demo cannot answer; the message tells the user what to do."""


@dataclass(frozen=True)
class Notice:
    """A message for the user that does not stop the request ("info" or "warning")."""

    level: str
    text: str


# An absolute path in a message (POSIX, or a Windows drive): what is left after the last slash
# is the part a user may know.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/:]+[\\/])+([^\s'\"\\/:]*)")


def hide_paths(text: str) -> str:
    """``text`` with every absolute server path replaced by its last part (the file name)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "", str(text))


def short_error(err: BaseException, *paths: Any) -> str:
    """The error message with server-side paths replaced by file names."""
    text = str(err)
    for path in paths:
        if path:
            text = text.replace(str(path), Path(str(path)).name)
    return hide_paths(text)


def reason(err: BaseException) -> str:
    """Why an OS or zip operation failed, without the server path the exception carries."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return hide_paths(str(err)) or type(err).__name__


def subject(name: str) -> str:
    """A message's subject: "The recording", or a user's file name exactly as given (its case is
    the user's: "dog.WAV" must not become "Dog.WAV")."""
    return "The recording" if name == "the recording" else f"The file {name}"
