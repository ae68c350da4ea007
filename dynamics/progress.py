"""What a command is doing, on stderr (stdout stays clean for --json).

On a terminal: progress bars (tqdm) and a status line rewritten in place, cleared
before any output. Otherwise (logs, cluster jobs): a plain line every
ICLDYN_PROGRESS_SECONDS seconds (default 30) with the elapsed time and what runs
now, e.g. `icldyn: 60 s, linreg sgd 4200/10000 step`; nothing for a command that
ends sooner.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

from tqdm import tqdm

_CLEAR = "\r\x1b[K"


class _Status:
    """The current activity, shown as described in the module docstring."""

    def __init__(self):
        self.text = ""
        self.shown = False
        self.lock = threading.Lock()

    def set(self, text: str) -> None:
        with self.lock:
            self.text = text
            if _terminal():
                sys.stderr.write(f"{_CLEAR}icldyn: {text}")
                sys.stderr.flush()
                self.shown = True

    def clear(self) -> None:
        """Erase the status line (before anything else is written)."""
        with self.lock:
            if self.shown:
                sys.stderr.write(_CLEAR)
                sys.stderr.flush()
                self.shown = False


STATUS = _Status()


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def interval() -> float:
    try:
        return max(float(os.environ.get("ICLDYN_PROGRESS_SECONDS", "30")), 0.1)
    except ValueError:
        return 30.0


@contextlib.contextmanager
def heartbeat() -> Iterator[None]:
    """While the body runs and stderr is no terminal: a plain progress line every
    interval() seconds. On a terminal the status line is cleared at the end."""
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(interval()):
            text = STATUS.text or "working"
            print(f"icldyn: {time.monotonic() - start:.0f} s, {text}", file=sys.stderr,
                  flush=True)

    thread = None
    if not _terminal():
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        STATUS.clear()
        STATUS.text = ""


class _Counter:
    """A bar's count without a bar (stderr no terminal): feeds the heartbeat's line."""

    def __init__(self, total: float, desc: str, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0.0
        self._show()

    def _show(self) -> None:
        STATUS.text = f"{self.desc} {self.n:.4g}/{self.total:.4g} {self.unit}"

    def update(self, n: float = 1) -> None:
        self.n += n
        self._show()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: float, desc: str, unit: str = "it"):
    """A progress bar on a terminal; elsewhere a counter the heartbeat reports."""
    if not _terminal():
        return _Counter(total, desc, unit)
    STATUS.clear()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                dynamic_ncols=True)
