"""`python -m bench [NAME ...]`: run the benchmarks (all by default), print each table, write
bench/out/<name>.{md,json}."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench import augment, cats_vs_dogs, decode_cache, train, train_workloads
from bench.common import DATASETS, DEFAULT_OUT

BENCHMARKS = ("decode_cache", "augment", "train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="the same, as an option"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="augment, train: cuda adds the CUDA rows to the CPU ones; auto (default) when "
        "available",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny subset (40 images; train: 2 epochs): checks every pipeline runs, not how fast",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each row; the table shows the median (train: one run, several epochs)",
    )
    parser.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="NAME",
        help="train: only these workloads (repeatable): "
        + ", ".join(w.key for w in train_workloads.WORKLOADS),
    )
    parser.add_argument(
        "--datasets", type=Path, default=DATASETS, help=f"shared datasets folder ({DATASETS})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default {DEFAULT_OUT}, or {DEFAULT_OUT / 'quick'} with --quick)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    chosen = args.names + args.only
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.benchmarks = [name for name in BENCHMARKS if name in chosen] or list(BENCHMARKS)
    known = {w.key: w for w in train_workloads.WORKLOADS}
    strange = [name for name in args.workload if name not in known]
    if strange:
        parser.error(f"unknown workload {', '.join(strange)}; choose from {', '.join(known)}")
    args.workloads = tuple(w for w in train_workloads.WORKLOADS if w.key in args.workload) or tuple(
        known.values()
    )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.devices = ("cpu", "cuda") if cuda else ("cpu",)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dataset = args.datasets / "cats_vs_dogs"
    absent = cats_vs_dogs.missing(dataset) if "decode_cache" in args.benchmarks else []
    if "train" in args.benchmarks:
        absent += train_workloads.missing(args.datasets, args.workloads)
    if absent:
        print(f"error: missing {', '.join(map(str, absent))}", file=sys.stderr)
        return 2
    for name in args.benchmarks:
        if name == "decode_cache":
            result = decode_cache.run(dataset, args.out, repeats=args.repeats, quick=args.quick)
        elif name == "train":
            result = train.run(
                args.datasets,
                args.out,
                quick=args.quick,
                devices=args.devices,
                workloads=args.workloads,
            )
        else:
            result = augment.run(
                args.out, repeats=args.repeats, quick=args.quick, devices=args.devices
            )
        print(result.markdown)
        print("wrote " + ", ".join(str(path) for path in result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
