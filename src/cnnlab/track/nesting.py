"""Nested runs: while a parent MLflow run is current (a study's, a sweep's), every tracked run
started in this process is its child, in the parent's store and experiment, with the parent's
tags (the cell and seed of a study, a sweep's trial number).

    with track.parent(tracking, "s1", study_folder) as parent:    # the study's own run
        with track.child(cell="adam", seed=0):
            cnnlab.run(experiment, folder)                          # a child of it

A worker process hands the parent over: `current()` is picklable, `within(it)` re-enters it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Parent:
    uri: str  # the store the children are written to
    experiment_id: str
    run_id: str
    folder: str  # the parent's folder: a child's MLflow run is named by its path from there
    tags: dict[str, str] = field(default_factory=dict)  # set on every child: cnnlab.cell, ...


_CURRENT: ContextVar[Parent | None] = ContextVar("cnnlab_track_parent", default=None)


def current() -> Parent | None:
    """The parent the runs started now are nested under, None outside of one."""
    return _CURRENT.get()


@contextmanager
def within(parent: Parent | None, **tags: object) -> Iterator[None]:
    """The runs started in the block are children of `parent`, tagged `cnnlab.NAME` = value
    for each of `tags`; with None, nothing changes."""
    if parent is None:
        yield
        return
    named = {f"cnnlab.{name}": str(value) for name, value in tags.items() if value is not None}
    token = _CURRENT.set(replace(parent, tags={**parent.tags, **named}))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def child(**tags: object) -> AbstractContextManager[None]:
    """`within(current(), **tags)`: tag the runs of the block when a parent is current."""
    return within(current(), **tags)
