"""Progress bars on stderr, so stdout keeps only results; silent when nothing is a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_console = Console(stderr=True)
# A caller running several runs at once (a study's cells in threads) silences their bars; a
# context variable, so one thread's silence is not another's.
_silent: ContextVar[bool] = ContextVar("cnnlab_progress_silent", default=False)


@contextmanager
def silenced(silent: bool = True) -> Iterator[None]:
    """No progress bars inside the block (in this thread) when `silent`."""
    token = _silent.set(silent or _silent.get())
    try:
        yield
    finally:
        _silent.reset(token)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; the bar disappears when done."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    # Only on a terminal: redirected to a file, a bar would leave blank lines behind.
    quiet = not _console.is_terminal or _silent.get()
    with Progress(*columns, console=_console, transient=True, disable=quiet) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
