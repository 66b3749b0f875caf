"""SIGTERM and SIGHUP end a compile the way Ctrl-C does: as an exception, so the cleanup that
runs for KeyboardInterrupt (staging folder removed, C compiler processes killed) runs for them.

    >>> with terminate_on_signals():      # doctest: +SKIP
    ...     nnc.compile(...)               # `kill <pid>` now raises Terminated here
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM/SIGHUP; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    # once is enough: a second signal during the cleanup must not interrupt it
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into `Terminated` for the duration, where they are still at their
    defaults and this is the main thread (a host application's own handlers are left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in SIGNALS:
        if signal.getsignal(s) == signal.SIG_DFL:
            previous[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
