"""A resumed run continues on the data it began with, or not at all.

The checkpoint's network, optimiser and history were made on the images split.csv records
(path, label, split, sha256 of every usable file). `--resume` reads the data again; if any of
that changed (images gone, added or rewritten, classes added or removed), continuing would
silently train on other data, or fail on a head of the wrong size, so it stops before any file
of the run is rewritten, saying what changed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cnnlab import runfiles
from cnnlab.errors import DataError

SHOWN = 5  # paths named per kind of change; the rest are counted


def check_same_data(folder: Path, manifest: str) -> None:
    """DataError naming what differs between the run's split.csv and `manifest`, the split
    manifest of the data as it is now (nothing to compare without a split.csv)."""
    recorded_path = folder / runfiles.SPLIT
    if not recorded_path.is_file():
        return
    recorded = recorded_path.read_text(encoding="utf-8")
    if recorded == manifest:
        return
    changes = data_changes(_rows(recorded), _rows(manifest))
    if not changes:  # the same rows, written otherwise (an older cnnlab's order)
        return
    raise DataError(
        f"--resume: the data of {folder} changed since the run began (see its "
        f"{runfiles.SPLIT}): {'; '.join(changes)}. Resuming needs the same data: restore it, "
        "or start a new run (without --resume)"
    )


Rows = dict[str, tuple[str, str, str]]  # path -> (label, split, sha256)


def _rows(text: str) -> Rows:
    reader = csv.DictReader(io.StringIO(text))
    return {row["path"]: (row["label"], row["split"], row["sha256"]) for row in reader}


def data_changes(before: Rows, now: Rows) -> list[str]:
    """What changed, in words: classes added or gone, images gone, new, rewritten, relabelled
    or moved to another split."""
    changes: list[str] = []
    old_classes = {label for label, _, _ in before.values()}
    new_classes = {label for label, _, _ in now.values()}
    for name in sorted(new_classes - old_classes):
        count = sum(label == name for label, _, _ in now.values())
        changes.append(f"class '{name}' was added ({_images(count)})")
    for name in sorted(old_classes - new_classes):
        changes.append(f"class '{name}' is gone")
    # a class's own images are not listed again
    gone = sorted(p for p in set(before) - set(now) if before[p][0] in new_classes)
    new = sorted(p for p in set(now) - set(before) if now[p][0] in old_classes)
    both = sorted(set(before) & set(now))
    changes += _listed(gone, "of split.csv {are} gone")
    changes += _listed(new, "{are} new")
    changes += _listed([p for p in both if before[p][2] != now[p][2]], "{are} rewritten")
    changes += _listed([p for p in both if before[p][0] != now[p][0]], "{are} relabelled")
    if not changes:  # the same images: only their split differs
        moved = [p for p in both if before[p][1] != now[p][1]]
        changes += _listed(moved, "moved to another split")
    return changes


def _listed(paths: list[str], what: str) -> list[str]:
    if not paths:
        return []
    shown = ", ".join(paths[:SHOWN]) + (", ..." if len(paths) > SHOWN else "")
    verb = what.format(are="is" if len(paths) == 1 else "are")
    return [f"{_images(len(paths))} {verb}: {shown}"]


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"
