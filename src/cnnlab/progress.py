"""Progress bars on stderr, so stdout keeps only results; silent when nothing is a terminal.

A bar can show running figures after its count (the fit loop: loss and accuracy so far). They
are read through a callable the bar calls only when it redraws them, at most every REFRESH_S
seconds and never when the bar is silent: reading figures kept on the GPU waits for it (a host
synchronisation), which must not happen at every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_console = Console(stderr=True)
# A caller running several runs at once (a study's cells in threads) silences their bars; a
# context variable, so one thread's silence is not another's.
_silent: ContextVar[bool] = ContextVar("cnnlab_progress_silent", default=False)
# Twice a second: figures that change faster cannot be read, and each read drains the GPU's
# queue of steps once (the host waits, then the device waits for the next step's launch).
REFRESH_S = 0.5
_clock: Callable[[], float] = time.monotonic  # tests put a fake clock here

Figures = Callable[[], Mapping[str, float]]


class Advance(Protocol):
    def __call__(self, n: int, figures: Figures | None = None) -> None: ...


@contextmanager
def silenced(silent: bool = True) -> Iterator[None]:
    """No progress bars inside the block (in this thread) when `silent`."""
    token = _silent.set(silent or _silent.get())
    try:
        yield
    finally:
        _silent.reset(token)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Advance]:
    """Yields `advance(n, figures=None)`; `figures()` gives the values shown after the count,
    called at most every REFRESH_S seconds. The bar disappears when done."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[figures]}"),
    )
    # Only on a terminal: redirected to a file, a bar would leave blank lines behind.
    quiet = not _console.is_terminal or _silent.get()
    with Progress(*columns, console=_console, transient=True, disable=quiet) as progress:
        task = progress.add_task(description, total=total, figures="")
        shown = _clock()

        def advance(n: int, figures: Figures | None = None) -> None:
            nonlocal shown
            if quiet:  # nothing is drawn: not even rich's bookkeeping (a small model's step
                return  # is a few milliseconds on the CPU, rich's advance ten microseconds)
            progress.advance(task, n)
            if figures is None:
                return
            now = _clock()
            if now - shown < REFRESH_S:
                return
            shown = now
            text = " - ".join(f"{name}: {value:.4f}" for name, value in figures().items())
            progress.update(task, figures=text, refresh=True)

        yield advance
