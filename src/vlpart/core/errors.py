"""The errors a user can fix, as types.

Every problem caused by what a user gave (a value, a file, a name, a missing extra) or by the
world outside (a download, a device) is raised as a :class:`VlpartError`; the command line prints
its message as one line (``vlpart: error: <file>: <problem>``) and exits with status 2, whatever
module raised it. Anything else is a bug and keeps its traceback.

Each class also derives from the built-in exception a caller would expect (``InputError`` is a
``ValueError``, ``MissingFileError`` a ``FileNotFoundError``, ...), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "InputTypeError",
    "MissingDependencyError",
    "MissingFileError",
    "RunError",
    "UnknownNameError",
    "VlpartError",
]


class VlpartError(Exception):
    """Base of the errors a user can fix; ``str()`` is the one-line message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class InputError(VlpartError, ValueError):
    """A value, option or file content that vlpart cannot use."""


class InputTypeError(VlpartError, TypeError):
    """An argument of a type vlpart does not accept."""


class UnknownNameError(VlpartError, KeyError):
    """A name (vocabulary, model, category, prompt) that is not known."""


class MissingFileError(VlpartError, FileNotFoundError):
    """A file or folder that was asked for and does not exist."""


class MissingDependencyError(VlpartError, ImportError):
    """An optional package (an extra of ``pip install 'vlpart[...]'``) that is not installed."""


class RunError(VlpartError, RuntimeError):
    """Something outside vlpart failed: a download, an exporter, a device, a diverging run."""
