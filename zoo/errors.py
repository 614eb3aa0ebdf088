"""The library's one error type for a bad argument: it names the Python argument, the command line names the flag.

``ArgumentError("precision", "'int8' needs calibration images")`` reads ``precision: 'int8' needs ...`` in Python;
``zoo`` maps the argument to its flag (``--precision``) through its parser, so flag wording lives in ``zoo/cli``.
Other arguments a message names (``"...; pass force to overwrite"``) are listed in ``also``: ``zoo`` shows their
flags there too (``pass --force to overwrite``).
"""

from __future__ import annotations

from collections.abc import Sequence


class ArgumentError(ValueError):
    """A bad value for the argument ``argument`` of a library function.

    Args:
        argument: the Python argument's name (``precision``, ``device``, ``image``...).
        message: what is wrong and the fix, without the argument's name.
        also: other arguments that ``message`` names, each as a word of its own (``force``).
    """

    def __init__(self, argument: str, message: str, also: Sequence[str] = ()) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message
        self.also = tuple(also)


class ZooWarning(UserWarning):
    """Something the user should know that did not stop the work (a skipped file, a deprecated form); ``zoo``
    prints each as one line, ``zoo COMMAND: warning: ...``."""


__all__ = ["ArgumentError", "ZooWarning"]
