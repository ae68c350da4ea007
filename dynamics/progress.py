"""Progress bars on stderr (stdout stays clean for --json); silent when stderr is no terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: float, desc: str, unit: str = "it") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False,
                dynamic_ncols=True)
