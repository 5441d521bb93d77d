"""How a health report and a data split look in the terminal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from cnnlab.data.health import HealthReport
from cnnlab.data.tree import is_system_entry

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Data

SHOWN = 20  # skipped files listed on screen; the JSON always has all of them


def print_report(console: Console, report: HealthReport, json_path: Path | None) -> None:
    console.print(f"[bold]{report.source}[/]", highlight=False)
    console.print(_class_table(report))
    usable = report.total - report.unreadable
    console.print(f"{usable:,} usable images of {report.total:,} ({len(report.classes)} classes)")
    console.print(f"sizes: {_top(report.sizes)}   modes: {_top(report.modes)}", highlight=False)
    console.print(f"imbalance (largest/smallest class): {report.imbalance_ratio:g}")
    _print_skipped(console, report, json_path)
    for group in report.duplicates:
        kind = "LEAKAGE across splits" if group["across_splits"] else "duplicate"
        console.print(f"[yellow]{kind}:[/] {' = '.join(group['paths'])}", highlight=False)
    for line in report.warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    _print_ignored(console, report.ignored)


def print_splits(console: Console, data: Data) -> None:
    table = Table("split", "images", *data.classes, title="Splits")
    for split in data.splits.values():
        counts = Counter(split.labels.tolist())
        table.add_row(
            split.name, f"{len(split):,}", *(f"{counts[k]:,}" for k in range(data.num_classes))
        )
    console.print(table)
    height, width, channels = data.input_shape
    console.print(f"input: {height}x{width}x{channels} uint8")
    for line in data.health.warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


def _class_table(report: HealthReport) -> Table:
    split_names = list(report.splits)
    table = Table("class", *split_names, *(["total"] if len(split_names) > 1 else []))
    for name, total in report.classes.items():
        cells = [f"{report.splits[s].get(name, 0):,}" for s in split_names]
        table.add_row(name, *cells, *([f"{total:,}"] if len(split_names) > 1 else []))
    return table


def _print_skipped(console: Console, report: HealthReport, json_path: Path | None) -> None:
    if not report.skipped:
        return
    # Counted by kind ("broken symlink", "truncated image"), the details left to each line.
    kinds = Counter(item["reason"].split(" (", 1)[0] for item in report.skipped)
    summary = ", ".join(f"{n:,} {kind}" for kind, n in kinds.most_common())
    heading = f"skipped {_count(len(report.skipped), 'file')}:"
    console.print(f"[yellow]{heading}[/] {summary}", highlight=False)
    for item in report.skipped[:SHOWN]:
        console.print(f"  {item['path']}: {item['reason']}", highlight=False)
    if len(report.skipped) > SHOWN:
        where = json_path or "--json FILE"
        console.print(f"  ... and {len(report.skipped) - SHOWN:,} more (see {where})")


def _print_ignored(console: Console, ignored: list[str]) -> None:
    """Entries that are never samples, not bad files: system/hidden ones and files that are
    not images by name (README.md, labels.csv). An ignored entry ends at the hidden part of
    its path, so its last part tells the two apart."""
    system: list[str] = []
    other: list[str] = []
    for path in ignored:
        is_system = is_system_entry(path.rstrip("/").rsplit("/", 1)[-1])
        (system if is_system else other).append(path)
    counts = [
        f"{_count(len(found), noun)} (e.g. {found[0]})"
        for found, noun in ((system, "system/hidden entry"), (other, "non-image file"))
        if found
    ]
    if counts:
        console.print(f"ignored {' and '.join(counts)}", highlight=False)


def _count(n: int, noun: str) -> str:
    """'1 file', '3 files', '2 system/hidden entries'."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} " + (noun[:-1] + "ies" if noun.endswith("y") else noun + "s")


def _top(counts: dict[str, int], n: int = 4) -> str:
    shown = ", ".join(f"{key} ({value:,})" for key, value in list(counts.items())[:n])
    return shown + (f", +{len(counts) - n} more" if len(counts) > n else "")
