"""The health report of a source: what is there, what was skipped and why, what repeats.

Built from the scan (layout, labels) and the per-file checks (hash, decodability). It is
shown by `cnnlab inspect`, written as JSON, and recorded by every experiment.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from cnnlab.data.tree import shown
from cnnlab.errors import DataError

IMBALANCED = 1.5  # largest / smallest class: the report notes it
# ... and past this in the training part it names the remedies: at 3:1 two classes are 75 % /
# 25 %, so always answering the larger already scores 75 % and the loss pulls little toward
# the smaller (Google's ML course calls a 20-40 % minority "mild"; 3:1 sits inside it).
REMEDY_RATIO = 3.0


@dataclass(frozen=True)
class Sample:
    """A scanned sample (file or array row) with the outcome of its check."""

    path: str
    label: str
    split: str | None  # from the source's layout; None when unsplit
    sha256: str
    format: str
    mode: str
    width: int
    height: int
    reason: str | None  # why it is unusable; None when usable


@dataclass
class HealthReport:
    source: str
    classes: dict[str, int]  # usable images per class, all splits together
    splits: dict[str, dict[str, int]]  # usable images per class within each layout split
    skipped: list[dict[str, str]]  # {path, reason}
    ignored: list[str]  # never samples: system and hidden entries, non-images by name (README)
    duplicates: list[dict[str, Any]]  # groups of identical files
    sizes: dict[str, int]  # "WxH" -> count, most common first
    modes: dict[str, int]
    formats: dict[str, int]
    imbalance_ratio: float  # largest class / smallest class
    empty_classes: list[str]
    unreadable: int  # samples whose content does not decode
    total: int  # samples found (usable + unreadable)
    warnings: list[str] = field(default_factory=list)

    @property
    def bad_fraction(self) -> float:
        return self.unreadable / self.total if self.total else 0.0

    @property
    def leakage(self) -> list[dict[str, Any]]:
        return [d for d in self.duplicates if d["across_splits"]]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "bad_fraction": self.bad_fraction}

    def raise_for_errors(self, max_bad_fraction: float) -> None:
        """Refuse data that cannot give honest numbers; each message says what to do."""
        if self.empty_classes:
            raise DataError(
                f"{self.source}: empty class(es) with no usable image: "
                f"{', '.join(self.empty_classes)}; add images or remove the folder(s)"
            )
        if len(self.classes) < 2:
            found = ", ".join(self.classes) or "none"
            raise DataError(
                f"{self.source}: found {len(self.classes)} class(es) ({found}); a classifier "
                "needs at least 2: one sub-folder per class, or data.label_pattern/labels_csv"
            )
        if self.bad_fraction > max_bad_fraction:
            # build_report lists unreadable samples after the files the scan skipped.
            example = self.skipped[len(self.skipped) - self.unreadable]
            raise DataError(
                f"{self.source}: {self.unreadable:,} of {self.total:,} files cannot be used "
                f"({self.bad_fraction:.1%} > data.max_bad_fraction {max_bad_fraction:g}), "
                f"e.g. {example['path']} ({example['reason']}); fix or remove "
                "them, or raise data.max_bad_fraction"
            )


def build_report(
    source: str,
    samples: list[Sample],
    skipped: list[tuple[str, str]],
    ignored: list[str],
    empty_folders: list[str],
) -> HealthReport:
    usable = [s for s in samples if s.reason is None]
    classes = dict(sorted(Counter(s.label for s in usable).items()))
    splits: dict[str, Counter[str]] = defaultdict(Counter)
    for s in usable:
        splits[s.split or "all"][s.label] += 1
    all_labels = {s.label for s in samples}
    empty = sorted(empty_folders) + sorted(all_labels - set(classes))
    counts = list(classes.values())
    report = HealthReport(
        source=shown(source),  # a path given on the command line may hold non-UTF-8 bytes
        classes=classes,
        splits={name: dict(sorted(splits[name].items())) for name in sorted(splits, key=_order)},
        skipped=[{"path": p, "reason": r} for p, r in skipped]
        + [{"path": s.path, "reason": s.reason} for s in samples if s.reason is not None],
        ignored=ignored,
        duplicates=_duplicates(usable),
        sizes=dict(Counter(f"{s.width}x{s.height}" for s in usable).most_common()),
        modes=dict(Counter(s.mode for s in usable).most_common()),
        formats=dict(Counter(s.format for s in usable).most_common()),
        imbalance_ratio=round(max(counts) / min(counts), 3) if counts else 0.0,
        empty_classes=empty,
        unreadable=len(samples) - len(usable),
        total=len(samples),
    )
    report.warnings = _warnings(report)
    return report


def remedy_note(report: HealthReport) -> str | None:
    """The imbalance note when it names the remedies: the training part is past REMEDY_RATIO."""
    return _imbalance_note(report) if _train_ratio(report) > REMEDY_RATIO else None


def _train_ratio(report: HealthReport) -> float:
    """The train part's own ratio when the source has one; else the whole source's, which a
    stratified split keeps in its training split (to within an image per class)."""
    train = list(report.splits.get("train", {}).values())
    return max(train) / min(train) if train else report.imbalance_ratio


def _imbalance_note(report: HealthReport) -> str | None:
    train_ratio = _train_ratio(report)
    if report.imbalance_ratio <= IMBALANCED and train_ratio <= REMEDY_RATIO:
        return None
    note = f"classes are imbalanced: the largest has {report.imbalance_ratio:g}x the smallest"
    if train_ratio > REMEDY_RATIO:
        if "train" in report.splits:
            note += f" ({train_ratio:.3g}x in the train part)"
        note += (
            "; to weigh the classes equally set train.class_weight: balanced (weights in the "
            "loss) or data.sampler: balanced (batches drawn evenly from each class)"
        )
    return note


def _order(split: str) -> int:
    return ("train", "val", "test", "all").index(split)


def _duplicates(usable: list[Sample]) -> list[dict[str, Any]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in usable:
        groups[s.sha256].append(s)
    found = []
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        split_names = sorted({m.split or "all" for m in members})
        found.append(
            {
                "sha256": digest,
                "paths": [m.path for m in members],
                "labels": sorted({m.label for m in members}),
                "splits": split_names,
                "across_splits": len(split_names) > 1,
                "conflicting_labels": len({m.label for m in members}) > 1,
            }
        )
    return sorted(found, key=lambda d: d["paths"][0])


def _warnings(report: HealthReport) -> list[str]:
    notes = []
    if report.leakage:
        n = len(report.leakage)
        notes.append(
            f"{n} group(s) of identical files sit in different splits (leakage), e.g. "
            f"{' = '.join(report.leakage[0]['paths'][:2])}; test scores will be optimistic"
        )
    conflicts = [d for d in report.duplicates if d["conflicting_labels"]]
    if conflicts:
        notes.append(
            f"{len(conflicts)} group(s) of identical files carry different labels, e.g. "
            f"{' / '.join(conflicts[0]['paths'][:2])}"
        )
    imbalance = _imbalance_note(report)
    if imbalance:
        notes.append(imbalance)
    for name, counts in report.splits.items():
        missing = sorted(set(report.classes) - set(counts))
        if missing and name != "all":
            notes.append(f"split {name} has no image of class(es) {', '.join(missing)}")
    return notes
