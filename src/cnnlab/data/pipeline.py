"""From a data config to checked, split, decoded uint8 arrays: scan, check, split, cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import numpy as np

from cnnlab import distributed
from cnnlab.config import DataConfig
from cnnlab.data.arrays import is_array_source, read_array_source
from cnnlab.data.cache import DecodeCache, cached_rows, default_cache_root, fingerprint, warn
from cnnlab.data.decode import DecodeOptions
from cnnlab.data.health import HealthReport, Sample, build_report
from cnnlab.data.ingest import FileCheck, check_arrays, check_entries
from cnnlab.data.pairs import paired_rows, target_config
from cnnlab.data.sources import Entry, scan_files
from cnnlab.data.split import assign_fold, assign_splits, manifest_csv, no_test_note
from cnnlab.errors import DataError
from cnnlab.runfiles import SPLIT_ORDER

T = TypeVar("T")


@dataclass
class Split:
    """One split: the seam models, training and augmentation build on."""

    name: str
    images: np.ndarray  # uint8 (N, C, H, W); memory-mapped when over data.ram_budget_mb
    labels: np.ndarray  # int64 (N,), indices into `classes`
    paths: list[str]
    classes: list[str]
    # task: reconstruction with data.targets: the target of each image, uint8 (N, C, H, W);
    # None: the images are their own targets
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    splits: dict[str, Split]  # train always; val and test when present
    classes: list[str]
    health: HealthReport
    manifest: str  # split manifest CSV: path,label,split,sha256
    fingerprint: str  # of the files, the decode options and the split

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels), Keras's order."""
        _, channels, height, width = self.splits["train"].images.shape
        return height, width, channels

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class Examined:
    samples: list[Sample]
    report: HealthReport
    pixels: np.ndarray | None  # one row per sample (zeros where unusable)
    files_key: str
    cache_folder: Path | None = None  # None for array sources, which are not cached


def decode_options(cfg: DataConfig) -> DecodeOptions:
    return DecodeOptions(
        color_mode=cfg.color_mode,
        target_size=cfg.target_size,
        resize=cfg.resize,
        interpolation=cfg.interpolation,
        background=cfg.background,
        max_pixels=cfg.max_pixels,
    )


def examine(cfg: DataConfig, options: DecodeOptions | None) -> Examined:
    """Scan and check the source (and decode it, with options), using the cache when valid."""
    if is_array_source(cfg.source):
        return _examine_arrays(cfg, options)
    scan = scan_files(cfg.source, cfg.label_pattern, cfg.labels_csv)
    if cfg.max_per_class is not None:
        kept = _per_class(scan.entries, lambda e: (e.split, e.label, e.path), cfg.max_per_class)
        scan.entries = [scan.entries[i] for i in kept]
    files_key = fingerprint([(e.path, e.stamp) for e in scan.entries])
    cache = DecodeCache(default_cache_root(cfg.cache_dir), files_key, len(scan.entries))
    budget = cfg.ram_budget_mb * 2**20
    checks = cache.load_checks()
    pixels = cache.load_pixels(options, budget) if options else None
    if checks is None or (options is not None and pixels is None):
        checks, pixels = _decode(scan.entries, cache, options, budget)
    samples = [
        _sample(e.path, e.label, e.split, c) for e, c in zip(scan.entries, checks, strict=True)
    ]
    report = build_report(cfg.source, samples, scan.skipped, scan.ignored, scan.empty_classes)
    return Examined(samples, report, pixels, files_key, cache.folder)


def _decode(
    entries: list[Entry], cache: DecodeCache, options: DecodeOptions | None, budget: int
) -> tuple[list[FileCheck], np.ndarray | None]:
    """Check (and with options decode) every file into the cache; where the cache folder
    refuses them, the run goes on without it (in memory, with a warning)."""
    writer = cache.writer(options, budget) if options else None
    try:
        checks = check_entries(entries, options, writer)
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer is None or writer.memory is None:  # not when the folder already refused
        try:
            cache.save_checks(checks)
        except OSError as error:
            if writer is not None:
                writer.give_up(error)  # pixels without their checks would never be used
            else:
                warn(
                    f"the decode cache folder {cache.folder} cannot be written"
                    f" ({error.strerror or error}); the next run checks the images again."
                    " To cache them, set data.cache_dir to a writable folder"
                )
    if writer is None:
        return checks, None
    pixels = writer.commit()
    if pixels is None and writer.published:
        assert options is not None  # a writer exists only with decode options
        pixels = cache.load_pixels(options, budget)
        if pixels is None:
            raise DataError(
                f"data.cache_dir: the decode cache file {cache.pixels_path(options)} cannot be"
                " read back just after it was written; set data.cache_dir to another folder"
            )
    return checks, pixels


def _examine_arrays(cfg: DataConfig, options: DecodeOptions | None) -> Examined:
    parts = read_array_source(cfg.source)
    rows: list[np.ndarray] = []
    samples: list[Sample] = []
    for part in parts:
        sink = (lambda _, pixels: rows.append(pixels)) if options else None
        for index, check in enumerate(check_arrays(part, options, sink)):
            label = str(int(part.labels[index]))
            samples.append(_sample(f"{part.name}#{index}", label, part.split, check))
    pixels = np.stack(rows) if rows else None
    if cfg.max_per_class is not None:
        kept = _per_class(samples, lambda s: (s.split, s.label, s.path), cfg.max_per_class)
        samples = [samples[i] for i in kept]
        pixels = pixels[kept] if pixels is not None else None
    report = build_report(cfg.source, samples, [], [], [])
    key = fingerprint([(s.path, s.sha256) for s in samples])
    return Examined(samples, report, pixels, key)


def _per_class(
    items: Sequence[T], key: Callable[[T], tuple[str | None, str, str]], limit: int
) -> list[int]:
    """Indices of at most `limit` items per (part, class), in their order: those whose paths
    hash lowest, so the subset does not follow the seed and grows by adding, not replacing."""
    groups: dict[tuple[str | None, str], list[tuple[str, int]]] = {}
    for index, item in enumerate(items):
        part, label, path = key(item)
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()
        groups.setdefault((part, label), []).append((digest, index))
    return sorted(index for group in groups.values() for _, index in sorted(group)[:limit])


def _sample(path: str, label: str, split: str | None, check: FileCheck) -> Sample:
    return Sample(
        path,
        label,
        split,
        check.sha256,
        check.format,
        check.mode,
        check.width,
        check.height,
        check.reason,
    )


def load_data(cfg: DataConfig, seed: int) -> Data:
    """Checked, split, decoded data; raises DataError (naming files and keys) when unusable.
    Under torchrun every process calls it: rank 0 first, which decodes into the cache, then
    the others, which read the cache, so no file is decoded twice."""
    with distributed.rank_zero_first():
        return _load_data(cfg, seed)


def _load_data(cfg: DataConfig, seed: int) -> Data:
    options = decode_options(cfg)
    found = examine(cfg, options)
    found.report.raise_for_errors(cfg.max_bad_fraction)
    usable = [i for i, s in enumerate(found.samples) if s.reason is None]
    samples = [found.samples[i] for i in usable]
    classes = sorted(found.report.classes, key=_natural)
    index_of = {name: k for k, name in enumerate(classes)}
    splits = assign_splits(samples, cfg.validation_split, cfg.test_split, seed)
    if cfg.folds is not None:
        splits = assign_fold(samples, splits, cfg.folds, cfg.fold, seed)
    manifest = manifest_csv(samples, splits)
    budget = cfg.ram_budget_mb * 2**20
    paired = examine(target_config(cfg), options) if cfg.targets is not None else None
    result: dict[str, Split] = {}
    for name in SPLIT_ORDER:
        members = [k for k, split in enumerate(splits) if split == name]
        if not members:
            continue
        rows = np.asarray([usable[k] for k in members])
        paths = [samples[k].path for k in members]
        targets = None
        if paired is not None:
            assert cfg.targets is not None
            targets = _take(paired, paired_rows(paired, paths, cfg.source, cfg.targets), budget)
        result[name] = Split(
            name=name,
            images=_take(found, rows, budget),
            labels=np.asarray([index_of[samples[k].label] for k in members], dtype=np.int64),
            paths=paths,
            classes=classes,
            targets=targets,
        )
    note = no_test_note(result)
    if note is not None and note not in found.report.warnings:
        found.report.warnings.append(note)
    pairing = paired.files_key if paired is not None else ""
    digest = hashlib.sha256(f"{found.files_key}{pairing}{options}{manifest}".encode())
    return Data(result, classes, found.report, manifest, digest.hexdigest()[:24])


def _take(found: Examined, rows: np.ndarray, budget: int) -> np.ndarray:
    """The split's rows; a memory-mapped cache gives a memory-mapped split, never a RAM copy."""
    if not isinstance(found.pixels, np.memmap) or found.cache_folder is None:
        # load_data examines with decode options, so the pixels are there
        return np.ascontiguousarray(cast(np.ndarray, found.pixels)[rows])
    return cached_rows(found.cache_folder, found.pixels, rows, budget)


def _natural(name: str) -> tuple:
    """Class order: numerically for numbers ("2" before "10"), else alphabetically (Keras)."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)
