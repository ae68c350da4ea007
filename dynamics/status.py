"""How a trajectory or a run ended."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """A trajectory's or a run's status. A str: it compares equal to, formats as and is
    stored as its value, so files and code that use the bare strings keep working.

    - complete: reached its last recorded time
    - diverged: a non-finite or unbounded state or loss (the records before it are kept)
    - stalled: the adaptive solver's step budget or step size ran out
    """

    COMPLETE = "complete"
    DIVERGED = "diverged"
    STALLED = "stalled"

    __str__ = str.__str__
    __format__ = str.__format__
