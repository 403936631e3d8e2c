"""The line between a user's mistake and a bug in maskfx.

``UserError`` is bad input (a config value, a file, a flag, data that cannot be read): its message
says what is wrong and how to fix it, and the ``maskfx`` command prints it as one line. Any other
exception is a bug in maskfx and keeps its traceback, so it can be reported and fixed. It is a
``ValueError``, so code that catches those keeps working.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input to maskfx, with what to do about it in the message."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message: what a one-line CLI error shows."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
