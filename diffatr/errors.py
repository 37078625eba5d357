"""The one base class of the errors a user can cause and fix.

A ``DiffatrError`` carries a message written for the person who gave the input (a file, a
caption, a setting, a checkpoint): the CLI prints it on one line and exits with code 2, the app
shows it and logs one line. Any other exception is a bug and keeps its traceback. Subclasses
stay ``ValueError``s so that callers catching ``ValueError`` keep working.
"""

from __future__ import annotations


class DiffatrError(ValueError):
    """Bad input, named in words the user can act on."""
