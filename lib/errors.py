"""The one base class of the kit's refusals: an entry point prints a `KitError` as one line and exits
1, while any other exception (a bug) keeps its traceback. Subclasses also derive from the fitting
built-in class (ValueError, FileNotFoundError, ...) so that callers may catch them either way.
"""
from __future__ import annotations


class KitError(Exception):
    """A refusal with a message that says what is wrong and what to do; never a bug."""
