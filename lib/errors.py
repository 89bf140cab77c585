"""The one base class of the kit's refusals.

Every error that means "the input or the situation is wrong, here is what to do" derives from
`KitError`, so an entry point prints such an error as one line and exits 1, while any other
exception (a bug) keeps its traceback. Subclasses also derive from the built-in class that fits
(ValueError, FileNotFoundError, ...) so that callers may catch them either way.
"""
from __future__ import annotations


class KitError(Exception):
    """A refusal with a message that says what is wrong and what to do; never a bug."""
