"""Find the samples of a source: its layout (splits, classes) and each file's label.

Layouts, detected in this order:
- parts named train/ (training/), val/ (valid/, validation/), test/ (testing/), as folders or
  as .zip files beside each other: each part is one split;
- otherwise the whole source is one unsplit part.
Single wrapper folders (an archive's top folder, `cats_and_dogs_filtered/`) are looked through.
Inside a part, labels come from class sub-folders (Keras's flow_from_directory), from the file
name by `label_pattern`, or from a `labels_csv`. Files that cannot be labelled are skipped and
named with the reason; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cnnlab.data.tree import Tree, TreeFile, open_tree, shown
from cnnlab.errors import DataError

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class Entry:
    """One candidate sample: a file, its label and the split its layout puts it in."""

    tree: Tree
    inner: str
    stamp: str
    label: str
    split: str | None

    @property
    def path(self) -> str:
        return self.tree.display(self.inner)


@dataclass
class Scan:
    entries: list[Entry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # system and hidden entries, and files that are not images by name (README.md, notes.txt)
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)  # class folders with no files


@dataclass(frozen=True)
class Part:
    tree: Tree
    files: tuple[TreeFile, ...]
    prefix: str
    split: str | None


def scan_files(
    source: str, label_pattern: str | None = None, labels_csv: str | None = None
) -> Scan:
    """Every file of `source` as a labelled entry, or as a skipped path with its reason."""
    try:
        tree = open_tree(source)
    except FileNotFoundError as err:
        raise DataError(f"data.source: {err}") from None
    scan = Scan()
    parts = _find_parts(tree, _listed(tree, scan), "", None, scan)
    csv_labels = _read_labels_csv(labels_csv) if labels_csv else None
    listed: set[str] = set()
    for part in parts:
        if csv_labels is not None:
            listed |= _label_by_csv(part, csv_labels, scan)
        elif label_pattern:
            _label_by_pattern(part, re.compile(label_pattern), scan)
        else:
            _label_by_folder(part, scan)
    if csv_labels is not None:
        for path in sorted(set(csv_labels) - listed):
            scan.skipped.append((path, f"listed in {labels_csv} but not found in the source"))
    return scan


def _listed(tree: Tree, scan: Scan) -> list[TreeFile]:
    """The tree's files that can be samples; the others named as skipped or ignored."""
    files, ignored = tree.files()
    scan.ignored += [tree.display(p) for p in ignored]
    scan.skipped += [(tree.display(f.inner), f.problem) for f in files if f.problem is not None]
    return [f for f in files if f.problem is None]


def _level(files: Iterable[TreeFile], prefix: str) -> tuple[list[str], list[TreeFile]]:
    """Sub-folder names and files directly at `prefix`."""
    dirs, loose = set(), []
    for f in files:
        rest = f.inner[len(prefix) :]
        if not rest:  # the empty folder `prefix` itself
            continue
        if "/" in rest:
            dirs.add(rest.split("/", 1)[0])
        else:
            loose.append(f)
    return sorted(dirs), loose


def _data_files(files: Iterable[TreeFile]) -> list[TreeFile]:
    return [f for f in files if not f.is_empty_folder]


def _under(files: Iterable[TreeFile], prefix: str) -> tuple[TreeFile, ...]:
    return tuple(f for f in files if f.inner.startswith(prefix))


def _find_parts(tree: Tree, files: Sequence[TreeFile], prefix: str, split: str | None, scan: Scan):
    dirs, loose = _level(files, prefix)
    if split is None:
        split_dirs = [d for d in dirs if d.lower() in SPLIT_NAMES]
        split_zips = [
            f
            for f in loose
            if not tree.is_zip
            and f.inner.lower().endswith(".zip")
            and PurePosixPath(f.inner).stem.lower() in SPLIT_NAMES
        ]
        if split_dirs or split_zips:
            return _split_parts(tree, files, prefix, split_dirs, split_zips, scan)
    if len(dirs) == 1 and not loose:
        inside = prefix + dirs[0] + "/"
        inner_dirs, inner_loose = _level(_under(files, inside), inside)
        named = SPLIT_NAMES.get(dirs[0].lower())
        # Look through an archive's top folder, or a split's own name inside its zip
        # (train.zip holding TRAIN/); a lone folder holding files is a class, not a wrapper.
        if (named is not None and named == split) or (inner_dirs and not inner_loose):
            return _find_parts(tree, files, inside, split, scan)
    return [Part(tree, _under(files, prefix), prefix, split)]


def _split_parts(tree, files, prefix, split_dirs, split_zips, scan) -> list[Part]:
    parts: list[Part] = []
    for name in split_dirs:
        inside = prefix + name + "/"
        parts += _find_parts(tree, _under(files, inside), inside, SPLIT_NAMES[name.lower()], scan)
    for archive in split_zips:
        zip_tree = open_tree(Path(tree.location) / archive.inner)
        split = SPLIT_NAMES[PurePosixPath(archive.inner).stem.lower()]
        parts += _find_parts(zip_tree, _listed(zip_tree, scan), "", split, scan)
    used = {prefix + d + "/" for d in split_dirs} | {z.inner for z in split_zips}
    for f in _data_files(_under(files, prefix)):
        if f.inner not in used and not any(f.inner.startswith(u) for u in used if u.endswith("/")):
            scan.skipped.append((tree.display(f.inner), "outside the train/val/test parts"))
    seen = {p.split for p in parts}
    if len(seen) < len(parts):
        raise DataError(
            f"data.source: {tree.location} has more than one part for the same split "
            f"({', '.join(sorted(split_dirs + [z.inner for z in split_zips]))}); keep one of each"
        )
    return parts


def _label_by_folder(part: Part, scan: Scan) -> None:
    dirs, loose = _level(part.files, part.prefix)
    for f in loose:
        scan.skipped.append((part.tree.display(f.inner), "not inside a class folder"))
    for label in dirs:
        inside = part.prefix + label + "/"
        members = [f for f in part.files if f.inner.startswith(inside) and not f.is_empty_folder]
        for f in members:
            scan.entries.append(Entry(part.tree, f.inner, f.stamp, shown(label), part.split))
        if not members:
            scan.empty_classes.append(part.tree.display(inside))


def _label_by_pattern(part: Part, pattern: re.Pattern[str], scan: Scan) -> None:
    for f in _data_files(part.files):
        match = pattern.search(PurePosixPath(f.inner).name)
        if match is None:
            reason = f"file name does not match label_pattern {pattern.pattern!r}"
            scan.skipped.append((part.tree.display(f.inner), reason))
            continue
        groups = match.groupdict()
        label = groups.get("label") or (match.group(1) if match.re.groups else match.group(0))
        scan.entries.append(Entry(part.tree, f.inner, f.stamp, shown(label), part.split))


def _read_labels_csv(path: str) -> dict[str, tuple[str, str | None]]:
    try:
        # utf-8-sig: spreadsheet programs start a "CSV UTF-8" file with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = set(reader.fieldnames or ())
    except OSError as err:
        raise DataError(f"data.labels_csv: cannot read {path} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"data.labels_csv: {path} is not UTF-8 text; save it as UTF-8") from None
    if not {"path", "label"} <= columns:
        raise DataError(
            f"data.labels_csv: {path} needs a header with columns path,label (optional split); "
            f"found {', '.join(sorted(c for c in columns if c)) or 'no header'}"
        )
    labels: dict[str, tuple[str, str | None]] = {}
    for line, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLIT_NAMES:
            raise DataError(
                f"data.labels_csv: {path}:{line}: split {split!r} is not train/val/test"
            )
        labels[row["path"].strip()] = (row["label"].strip(), split and SPLIT_NAMES[split])
    return labels


def _label_by_csv(part: Part, labels: dict[str, tuple[str, str | None]], scan: Scan) -> set[str]:
    found = set()
    for f in _data_files(part.files):
        key = next((k for k in (f.inner, part.tree.display(f.inner)) if k in labels), None)
        if key is None:
            scan.skipped.append((part.tree.display(f.inner), "not listed in labels_csv"))
            continue
        found.add(key)
        label, split = labels[key]
        scan.entries.append(Entry(part.tree, f.inner, f.stamp, label, split or part.split))
    return found
